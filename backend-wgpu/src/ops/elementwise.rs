//! Elementwise arithmetic and activations: flat ranges, split into binding-sized blocks.

use axpo_core::backend::{Activation, DType, ElementwiseOps};
use axpo_core::check_len;
use axpo_core::{Error, Result};

use crate::Wgpu;
use crate::context::{Job, WgpuBuffer, f32_out, float, u};
use crate::kernels::Family;

fn act_code(act: Activation) -> Result<u32> {
    Ok(match act {
        Activation::Silu => 0,
        Activation::GeluTanh => 1,
        Activation::GeluErf => 2,
        _ => {
            return Err(Error::InvalidConfig {
                field: "Activation",
                reason: "not supported by the wgpu backend",
            });
        }
    })
}

impl Wgpu {
    /// Elements per block so that every operand window fits a binding; a multiple of `unit`
    /// (the bias width, so blocks start at column 0) and of 2 (whole words of half types).
    fn block_len(&self, unit: usize) -> usize {
        let per = self.inner.rows_per_binding(DType::F32, 1).max(2);
        let unit = unit.max(1) * 2;
        (per / unit).max(1) * unit
    }

    /// Runs `entry` over `n` elements: `o` (f32, read-write) and the optional inputs `x`, `y`
    /// (`y` broadcast with period `cols` when `cols > 0`).
    #[allow(clippy::too_many_arguments)]
    fn elementwise(
        &self,
        entry: &'static str,
        n: usize,
        o: &WgpuBuffer,
        x: Option<&WgpuBuffer>,
        y: Option<&WgpuBuffer>,
        cols: usize,
        act: u32,
    ) -> Result<()> {
        let block = if cols > 0 {
            let per_rows = self.inner.rows_per_binding(DType::F32, cols);
            if per_rows == 0 {
                return Err(crate::context::err(
                    axpo_core::BackendErrorKind::LimitExceeded,
                    format!("{entry}: one row does not fit a storage binding"),
                ));
            }
            self.block_len(cols).min(per_rows * cols)
        } else {
            self.block_len(1)
        };
        let mut jobs = Vec::new();
        let mut start = 0;
        while start < n {
            let end = (start + block).min(n);
            let len = end - start;
            let (ow, obase) = self.inner.window(o, start, end)?;
            let mut job = Job::new(Family::Elementwise, entry, len.div_ceil(256)).bind(3, ow);
            let mut x_off = 0;
            let mut y_off = 0;
            if let Some(x) = x {
                let (xw, xbase) = self.inner.window(x, start, end)?;
                x_off = u(start)? - xbase;
                job = job.dtype("x", x.dtype).bind(1, xw);
            }
            if let Some(y) = y {
                let (ys, ye) = if cols > 0 { (0, cols) } else { (start, end) };
                let (yw, ybase) = self.inner.window(y, ys, ye)?;
                y_off = u(ys)? - ybase;
                job = job.dtype("y", y.dtype).bind(2, yw);
            }
            let col0 = if cols > 0 { start % cols } else { 0 };
            jobs.push(job.params(&[
                u(len)?,
                x_off,
                y_off,
                u(start)? - obase,
                u(cols)?,
                u(col0)?,
                act,
            ]));
            start = end;
        }
        self.inner.submit(&jobs, entry)
    }

    fn bias_width(x: &WgpuBuffer, bias: &WgpuBuffer, op: &'static str) -> Result<usize> {
        let cols = bias.len;
        if cols == 0 || !x.len.is_multiple_of(cols) {
            return Err(Error::Shape {
                op,
                reason: "length is not a multiple of the bias width",
            });
        }
        float(op, bias.dtype)?;
        Ok(cols)
    }
}

impl ElementwiseOps for Wgpu {
    fn add_assign(&self, dst: &mut WgpuBuffer, src: &WgpuBuffer) -> Result<()> {
        check_len("add_assign operands", dst.len, src.len)?;
        float("add_assign", src.dtype)?;
        f32_out("add_assign", dst)?;
        self.elementwise("add_assign", dst.len, dst, Some(src), None, 0, 0)
    }

    fn mul(&self, a: &WgpuBuffer, b: &WgpuBuffer) -> Result<WgpuBuffer> {
        check_len("mul operands", a.len, b.len)?;
        float("mul", a.dtype)?;
        float("mul", b.dtype)?;
        let out = self.inner.zeros(DType::F32, a.len)?;
        self.elementwise("mul", a.len, &out, Some(a), Some(b), 0, 0)?;
        Ok(out)
    }

    fn add_bias(&self, x: &mut WgpuBuffer, bias: &WgpuBuffer) -> Result<()> {
        let cols = Self::bias_width(x, bias, "add_bias")?;
        f32_out("add_bias", x)?;
        self.elementwise("add_bias", x.len, x, None, Some(bias), cols, 0)
    }

    fn activation(&self, x: &WgpuBuffer, act: Activation) -> Result<WgpuBuffer> {
        float("activation", x.dtype)?;
        let code = act_code(act)?;
        let out = self.inner.zeros(DType::F32, x.len)?;
        self.elementwise("activation", x.len, &out, Some(x), None, 0, code)?;
        Ok(out)
    }

    fn swiglu(&self, gate: &WgpuBuffer, up: &WgpuBuffer) -> Result<WgpuBuffer> {
        check_len("swiglu operands", gate.len, up.len)?;
        float("swiglu", gate.dtype)?;
        float("swiglu", up.dtype)?;
        let out = self.inner.zeros(DType::F32, gate.len)?;
        self.elementwise("swiglu", gate.len, &out, Some(gate), Some(up), 0, 0)?;
        Ok(out)
    }

    fn bias_activation(
        &self,
        x: WgpuBuffer,
        bias: &WgpuBuffer,
        act: Activation,
    ) -> Result<WgpuBuffer> {
        let cols = Self::bias_width(&x, bias, "bias_activation")?;
        f32_out("bias_activation", &x)?;
        let code = act_code(act)?;
        self.elementwise("bias_activation", x.len, &x, None, Some(bias), cols, code)?;
        Ok(x)
    }
}

//! Seeded random inputs: a tiny SplitMix64 generator, so that every run of every backend sees
//! the same values and a failure can be replayed from the check name alone.

use half::{bf16, f16};

/// A SplitMix64 pseudo-random generator (not cryptographic; reproducible across platforms).
#[derive(Debug, Clone)]
pub struct Gen {
    state: u64,
}

impl Gen {
    /// A generator seeded from a check name (FNV-1a of the name), so each check draws its own
    /// stream.
    #[must_use]
    pub fn for_check(name: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Self { state: h }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `0..n` (`n > 0`; returns 0 for `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// A standard normal sample (Box–Muller), never exactly zero.
    pub fn normal(&mut self) -> f64 {
        loop {
            let u1 = self.unit();
            let u2 = self.unit();
            if u1 <= 0.0 {
                continue;
            }
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * core::f64::consts::PI * u2).cos();
            if z != 0.0 {
                return z;
            }
        }
    }

    /// `n` values `scale * N(0, 1)` rounded to f32 (never zero).
    pub fn f32s(&mut self, n: usize, scale: f64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let v = (scale * self.normal()) as f32;
                if v == 0.0 { scale as f32 } else { v }
            })
            .collect()
    }

    /// `n` values uniform in `[lo, hi)`, as f32.
    pub fn uniform_f32s(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (hi - lo) * self.unit()) as f32)
            .collect()
    }

    /// `n` bf16 values `scale * N(0, 1)` (never zero).
    pub fn bf16s(&mut self, n: usize, scale: f64) -> Vec<bf16> {
        self.f32s(n, scale)
            .into_iter()
            .map(|v| {
                let b = bf16::from_f32(v);
                if b.to_f32() == 0.0 { bf16::ONE } else { b }
            })
            .collect()
    }

    /// `n` f16 values `scale * N(0, 1)` (never zero; kept in the normal range of f16).
    pub fn f16s(&mut self, n: usize, scale: f64) -> Vec<f16> {
        self.f32s(n, scale)
            .into_iter()
            .map(|v| {
                let h = f16::from_f32(v);
                if h.to_f32().abs() < 1e-4 { f16::ONE } else { h }
            })
            .collect()
    }

    /// `n` ids uniform in `0..bound`.
    pub fn ids(&mut self, n: usize, bound: usize) -> Vec<u32> {
        (0..n).map(|_| self.below(bound) as u32).collect()
    }

    /// `n` random u32 values.
    pub fn u32s(&mut self, n: usize) -> Vec<u32> {
        (0..n).map(|_| (self.next_u64() >> 32) as u32).collect()
    }
}

/// Widens f32 values to f64 (exactly).
#[must_use]
pub fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// Widens bf16 values to f64 (exactly).
#[must_use]
pub fn wide_bf16(v: &[bf16]) -> Vec<f64> {
    v.iter().map(|x| f64::from(x.to_f32())).collect()
}

/// Widens f16 values to f64 (exactly).
#[must_use]
pub fn wide_f16(v: &[f16]) -> Vec<f64> {
    v.iter().map(|x| f64::from(x.to_f32())).collect()
}

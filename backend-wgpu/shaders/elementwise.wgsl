// Elementwise arithmetic and activations over flat ranges (one thread per element).

struct EwP {
    n: u32,
    x_off: u32,
    y_off: u32,
    o_off: u32,
    // add_bias / bias_activation: bias width; index of the range's first element modulo it.
    cols: u32,
    col0: u32,
    // 0 SiLU, 1 GELU (tanh), 2 GELU (erf).
    act: u32,
}

@group(0) @binding(0) var<uniform> p: EwP;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> y: array<u32>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;

// tanh from one exp, stable for every |t| (the builtin may overflow to NaN on some drivers).
fn tanh_stable(t: f32) -> f32 {
    let e = exp(-2.0 * abs(t));
    let r = (1.0 - e) / (1.0 + e);
    return select(r, -r, t < 0.0);
}

// erf, |error| < 1.2e-7 (the Chebyshev fit of erfc from Numerical Recipes, section 6.2).
fn erf_approx(v: f32) -> f32 {
    let z = abs(v);
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277))))))));
    let r = 1.0 - t * exp(poly);
    return select(r, -r, v < 0.0);
}

fn activate(v: f32, act: u32) -> f32 {
    if (act == 0u) {
        return v / (1.0 + exp(-v));
    }
    if (act == 1u) {
        let c = 0.7978845608028654;
        return 0.5 * v * (1.0 + tanh_stable(c * (v + 0.044715 * v * v * v)));
    }
    return 0.5 * v * (1.0 + erf_approx(v * 0.7071067811865476));
}

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return group_index(wid, nwg) * 256u + li;
}

@compute @workgroup_size(256)
fn add_assign(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let i = flat_index(wid, nwg, li);
    if (i < p.n) {
        o[p.o_off + i] = o[p.o_off + i] + x_at(p.x_off + i);
    }
}

@compute @workgroup_size(256)
fn mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) li: u32) {
    let i = flat_index(wid, nwg, li);
    if (i < p.n) {
        o[p.o_off + i] = x_at(p.x_off + i) * y_at(p.y_off + i);
    }
}

@compute @workgroup_size(256)
fn add_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let i = flat_index(wid, nwg, li);
    if (i < p.n) {
        o[p.o_off + i] = o[p.o_off + i] + y_at(p.y_off + (p.col0 + i) % p.cols);
    }
}

@compute @workgroup_size(256)
fn activation(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let i = flat_index(wid, nwg, li);
    if (i < p.n) {
        o[p.o_off + i] = activate(x_at(p.x_off + i), p.act);
    }
}

// silu(gate) * up in one pass.
@compute @workgroup_size(256)
fn swiglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let i = flat_index(wid, nwg, li);
    if (i < p.n) {
        o[p.o_off + i] = activate(x_at(p.x_off + i), 0u) * y_at(p.y_off + i);
    }
}

// act(x + bias) in place, in one pass.
@compute @workgroup_size(256)
fn bias_activation(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let i = flat_index(wid, nwg, li);
    if (i < p.n) {
        let v = o[p.o_off + i] + y_at(p.y_off + (p.col0 + i) % p.cols);
        o[p.o_off + i] = activate(v, p.act);
    }
}

// RMSNorm, LayerNorm and the fused per-head RMSNorm + rotary: one workgroup per row, f32
// statistics, the normalised value rounded to the input's precision before the weight (as
// PyTorch does for half inputs).

struct NormP {
    rows: u32,
    d: u32,
    x_off: u32,
    o_off: u32,
    w_off: u32,
    b_off: u32,
    eps: f32,
    // 0 none, 1 bf16, 2 f16.
    round: u32,
    // rms_norm_rotary: heads per table row, table offsets.
    heads: u32,
    cs_off: u32,
    sn_off: u32,
}

@group(0) @binding(0) var<uniform> p: NormP;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<u32>;
@group(0) @binding(4) var<storage, read_write> o: array<f32>;
@group(0) @binding(5) var<storage, read> cs: array<u32>;
@group(0) @binding(6) var<storage, read> sn: array<u32>;

var<workgroup> red: array<f32, 256>;
var<workgroup> vals: array<f32, 1024>;

// Sum of `v` over the workgroup (every thread gets the result).
fn reduce_sum(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] = red[li] + red[li + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// 1 / sqrt(mean(x^2) + eps) of the row starting at `base`.
fn rms_inv(li: u32, base: u32) -> f32 {
    var s = 0.0;
    for (var c = li; c < p.d; c += 256u) {
        let v = x_at(base + c);
        s = fma(v, v, s);
    }
    let ms = reduce_sum(li, s) / f32(p.d);
    return 1.0 / sqrt(ms + p.eps);
}

@compute @workgroup_size(256)
fn rms_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let r = group_index(wid, nwg);
    if (r >= p.rows) {
        return;
    }
    let base = p.x_off + r * p.d;
    let inv = rms_inv(li, base);
    for (var c = li; c < p.d; c += 256u) {
        o[p.o_off + r * p.d + c] = round_to(x_at(base + c) * inv, p.round) * w_at(p.w_off + c);
    }
}

@compute @workgroup_size(256)
fn layer_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let r = group_index(wid, nwg);
    if (r >= p.rows) {
        return;
    }
    let base = p.x_off + r * p.d;
    var s = 0.0;
    for (var c = li; c < p.d; c += 256u) {
        s += x_at(base + c);
    }
    let mean = reduce_sum(li, s) / f32(p.d);
    var q = 0.0;
    for (var c = li; c < p.d; c += 256u) {
        let t = x_at(base + c) - mean;
        q = fma(t, t, q);
    }
    let inv = 1.0 / sqrt(reduce_sum(li, q) / f32(p.d) + p.eps);
    for (var c = li; c < p.d; c += 256u) {
        let n = round_to((x_at(base + c) - mean) * inv, p.round);
        o[p.o_off + r * p.d + c] = fma(n, w_at(p.w_off + c), bias_at(p.b_off + c));
    }
}

// One workgroup per (row, head): RMSNorm over the head (weight of width d = head_dim), then
// the rotate-half_d rotation by the row's tables. head_dim <= 1024.
@compute @workgroup_size(256)
fn rms_norm_rotary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let rr = group_index(wid, nwg);
    if (rr >= p.rows) {
        return;
    }
    let base = p.x_off + rr * p.d;
    let inv = rms_inv(li, base);
    for (var c = li; c < p.d; c += 256u) {
        vals[c] = round_to(x_at(base + c) * inv, p.round) * w_at(p.w_off + c);
    }
    workgroupBarrier();
    let half_d = p.d / 2u;
    let t = (rr / p.heads) * p.d;
    for (var i = li; i < half_d; i += 256u) {
        let a = vals[i];
        let b = vals[i + half_d];
        o[p.o_off + rr * p.d + i] = a * cs_at(p.cs_off + t + i) - b * sn_at(p.sn_off + t + i);
        o[p.o_off + rr * p.d + i + half_d] =
            b * cs_at(p.cs_off + t + i + half_d) + a * sn_at(p.sn_off + t + i + half_d);
    }
}

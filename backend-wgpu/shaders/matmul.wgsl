// Tiled matrix products: 64x64 output tiles, 16-deep k slices staged in workgroup memory,
// 64 threads computing 8x8 outputs each (in vec4 registers) with f32 accumulation. Operands are strided
// (element (i, p) of op(A) is a[a_off + i * a_rs + p * a_cs]), so both layouts and every view
// share one kernel.

struct MmP {
    m: u32,
    n: u32,
    k: u32,
    a_off: u32,
    a_rs: u32,
    a_cs: u32,
    b_off: u32,
    b_rs: u32,
    b_cs: u32,
    o_off: u32,
    o_stride: u32,
    accumulate: u32,
    alpha: f32,
    tiles_n: u32,
    // matmul_logit_grad only: vocabulary index of column 0, and the bases of the per-row
    // targets and [lse, entropy, g_logp, g_entropy] records.
    vocab_offset: u32,
    t_off: u32,
    r_off: u32,
}

@group(0) @binding(0) var<uniform> p: MmP;
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> targets: array<u32>;
@group(0) @binding(5) var<storage, read> rowp: array<f32>;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 32u;

var<workgroup> a_tile: array<f32, 2048>; // [TK][TM]
var<workgroup> b_tile: array<f32, 2048>; // [TK][TN]

// The 8x8 accumulators of thread `li` (tx = li % 8, ty = li / 8) for the tile at
// (row0, col0): element [2 i + h][c] is row row0 + ty + 8 i, column col0 + tx + 8 (4 h + c).
fn mm_tile(li: u32, row0: u32, col0: u32) -> array<vec4<f32>, 16> {
    var c00 = vec4<f32>(0.0);
    var c01 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0);
    var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0);
    var c21 = vec4<f32>(0.0);
    var c30 = vec4<f32>(0.0);
    var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0);
    var c41 = vec4<f32>(0.0);
    var c50 = vec4<f32>(0.0);
    var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0);
    var c61 = vec4<f32>(0.0);
    var c70 = vec4<f32>(0.0);
    var c71 = vec4<f32>(0.0);
    let tx = li % 8u;
    let ty = li / 8u;
    let a_kfast = p.a_cs == 1u;
    let b_kfast = p.b_rs == 1u && p.b_cs != 1u;
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        for (var t = 0u; t < 32u; t++) {
            let idx = li + 64u * t;
            var kk: u32;
            var ii: u32;
            if (a_kfast) {
                ii = idx / TK;
                kk = idx % TK;
            } else {
                kk = idx / TM;
                ii = idx % TM;
            }
            let gi = row0 + ii;
            let gk = k0 + kk;
            var v = 0.0;
            if (gi < p.m && gk < p.k) {
                v = a_at(p.a_off + gi * p.a_rs + gk * p.a_cs);
            }
            a_tile[kk * TM + ii] = v;
            var jj: u32;
            if (b_kfast) {
                jj = idx / TK;
                kk = idx % TK;
            } else {
                kk = idx / TN;
                jj = idx % TN;
            }
            let gj = col0 + jj;
            let gk2 = k0 + kk;
            var w = 0.0;
            if (gj < p.n && gk2 < p.k) {
                w = b_at(p.b_off + gk2 * p.b_rs + gj * p.b_cs);
            }
            b_tile[kk * TN + jj] = w;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let ab = kk * TM + ty;
            let bb = kk * TN + tx;
            let a0 = vec4<f32>(a_tile[ab], a_tile[ab + 8u], a_tile[ab + 16u], a_tile[ab + 24u]);
            let a1 = vec4<f32>(a_tile[ab + 32u], a_tile[ab + 40u], a_tile[ab + 48u], a_tile[ab + 56u]);
            let b0 = vec4<f32>(b_tile[bb], b_tile[bb + 8u], b_tile[bb + 16u], b_tile[bb + 24u]);
            let b1 = vec4<f32>(b_tile[bb + 32u], b_tile[bb + 40u], b_tile[bb + 48u], b_tile[bb + 56u]);
            c00 = fma(vec4<f32>(a0.x), b0, c00);
            c01 = fma(vec4<f32>(a0.x), b1, c01);
            c10 = fma(vec4<f32>(a0.y), b0, c10);
            c11 = fma(vec4<f32>(a0.y), b1, c11);
            c20 = fma(vec4<f32>(a0.z), b0, c20);
            c21 = fma(vec4<f32>(a0.z), b1, c21);
            c30 = fma(vec4<f32>(a0.w), b0, c30);
            c31 = fma(vec4<f32>(a0.w), b1, c31);
            c40 = fma(vec4<f32>(a1.x), b0, c40);
            c41 = fma(vec4<f32>(a1.x), b1, c41);
            c50 = fma(vec4<f32>(a1.y), b0, c50);
            c51 = fma(vec4<f32>(a1.y), b1, c51);
            c60 = fma(vec4<f32>(a1.z), b0, c60);
            c61 = fma(vec4<f32>(a1.z), b1, c61);
            c70 = fma(vec4<f32>(a1.w), b0, c70);
            c71 = fma(vec4<f32>(a1.w), b1, c71);
        }
        workgroupBarrier();
    }
    return array<vec4<f32>, 16>(c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71);
}

// out (=|+=) alpha * op(A) op(B).
@compute @workgroup_size(64)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let g = group_index(wid, nwg);
    let tm = g / p.tiles_n;
    let tn = g % p.tiles_n;
    if (tm * TM >= p.m) {
        return;
    }
    let acc = mm_tile(li, tm * TM, tn * TN);
    let tx = li % 8u;
    let ty = li / 8u;
    for (var i = 0u; i < 8u; i++) {
        let gi = tm * TM + ty + 8u * i;
        for (var j = 0u; j < 8u; j++) {
            let gj = tn * TN + tx + 8u * j;
            if (gi < p.m && gj < p.n) {
                let o = p.o_off + gi * p.o_stride + gj;
                var v = p.alpha * acc[2u * i + j / 4u][j % 4u];
                if (p.accumulate == 1u) {
                    v = out[o] + v;
                }
                out[o] = v;
            }
        }
    }
}

// d loss / d logit for the logits z = op(A) op(B) of one vocabulary chunk, written in place of
// the logits (the fused backward of the output head never stores them).
@compute @workgroup_size(64)
fn matmul_logit_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) li: u32) {
    let g = group_index(wid, nwg);
    let tm = g / p.tiles_n;
    let tn = g % p.tiles_n;
    if (tm * TM >= p.m) {
        return;
    }
    let acc = mm_tile(li, tm * TM, tn * TN);
    let tx = li % 8u;
    let ty = li / 8u;
    for (var i = 0u; i < 8u; i++) {
        let gi = tm * TM + ty + 8u * i;
        if (gi >= p.m) {
            continue;
        }
        let r = p.r_off + 4u * gi;
        let lse = rowp[r];
        let ent = rowp[r + 1u];
        let gl = rowp[r + 2u];
        let ge = rowp[r + 3u];
        let tgt = targets[p.t_off + gi];
        for (var j = 0u; j < 8u; j++) {
            let gj = tn * TN + tx + 8u * j;
            if (gj < p.n) {
                let z = acc[2u * i + j / 4u][j % 4u];
                let is_t = tgt == p.vocab_offset + gj;
                var d = select(0.0, gl, is_t);
                let lnp = z - lse;
                let pr = exp(lnp);
                if (pr > 0.0) {
                    d = gl * (select(0.0, 1.0, is_t) - pr) - ge * pr * (lnp + ent);
                }
                out[p.o_off + gi * p.o_stride + gj] = d;
            }
        }
    }
}

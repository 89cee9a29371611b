// Per-token statistics from logits with an online softmax, and their backward.
//
// Each row keeps the state (max m, sum s = sum e^(z-m), weighted u = sum e^(z-m)(z-m),
// square q = sum e^(2(z-m)), target logit) documented in axpo-core's stats.rs; one workgroup
// folds a row in a single pass (each thread online over a strided slice, then a tree merge).
// -inf logits (grammar masks) contribute nothing.

struct StatsP {
    rows: u32,
    cols: u32,
    z_off: u32,
    z_stride: u32,
    vocab_offset: u32,
    t_off: u32,
    st_off: u32,
    o_off: u32,
}

struct GradP {
    rows: u32,
    cols: u32,
    z_off: u32,
    z_stride: u32,
    vocab_offset: u32,
    t_off: u32,
    // Offsets of the per-row lse, entropy, d_logp, d_entropy windows.
    lse_off: u32,
    ent_off: u32,
    gl_off: u32,
    ge_off: u32,
    has_ge: u32,
    o_off: u32,
    o_stride: u32,
    // Workgroups per row (each covers 1024 columns).
    blocks: u32,
}

@group(0) @binding(0) var<uniform> p: StatsP;
@group(0) @binding(0) var<uniform> gp: GradP;
@group(0) @binding(1) var<storage, read> z: array<u32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read_write> o_logp: array<f32>;
@group(0) @binding(5) var<storage, read_write> o_ent: array<f32>;
@group(0) @binding(6) var<storage, read_write> o_p2: array<f32>;
@group(0) @binding(7) var<storage, read_write> o_lse: array<f32>;
@group(0) @binding(8) var<storage, read> g_lse: array<f32>;
@group(0) @binding(9) var<storage, read> g_ent: array<f32>;
@group(0) @binding(10) var<storage, read> g_logp: array<f32>;
@group(0) @binding(11) var<storage, read> g_entropy: array<f32>;
@group(0) @binding(12) var<storage, read_write> dz: array<f32>;

struct St {
    m: f32,
    s: f32,
    u: f32,
    q: f32,
}

var<workgroup> rm: array<f32, 256>;
var<workgroup> rs: array<f32, 256>;
var<workgroup> ru: array<f32, 256>;
var<workgroup> rq: array<f32, 256>;

fn st_empty() -> St {
    return St(LOWEST, 0.0, 0.0, 0.0);
}

// Adds one logit to a running state.
fn st_push(a: St, v: f32) -> St {
    if (is_neg_inf(v)) {
        return a;
    }
    if (a.s <= 0.0) {
        return St(v, 1.0, 0.0, 1.0);
    }
    if (v <= a.m) {
        let d = v - a.m;
        let e = exp(d);
        return St(a.m, a.s + e, fma(e, d, a.u), fma(e, e, a.q));
    }
    let d = a.m - v;
    let e = exp(d);
    return St(v, fma(a.s, e, 1.0), e * fma(d, a.s, a.u), fma(a.q * e, e, 1.0));
}

// Merges two states (the contract's `merge`: an empty side leaves the other unchanged).
fn st_merge(a: St, b: St) -> St {
    if (b.s <= 0.0) {
        return a;
    }
    if (a.s <= 0.0) {
        return b;
    }
    let m = max(a.m, b.m);
    let da = a.m - m;
    let db = b.m - m;
    let ea = exp(da);
    let eb = exp(db);
    return St(
        m,
        ea * a.s + eb * b.s,
        ea * fma(da, a.s, a.u) + eb * fma(db, b.s, b.u),
        ea * ea * a.q + eb * eb * b.q,
    );
}

// The state of `cols` logits of row r (relative to their own maximum), merged over the
// workgroup; every thread gets it.
fn row_state(li: u32, r: u32) -> St {
    var st = st_empty();
    let base = p.z_off + r * p.z_stride;
    for (var c = li; c < p.cols; c += 256u) {
        st = st_push(st, z_at(base + c));
    }
    rm[li] = st.m;
    rs[li] = st.s;
    ru[li] = st.u;
    rq[li] = st.q;
    workgroupBarrier();
    for (var k = 128u; k > 0u; k >>= 1u) {
        if (li < k) {
            let mm = st_merge(St(rm[li], rs[li], ru[li], rq[li]),
                              St(rm[li + k], rs[li + k], ru[li + k], rq[li + k]));
            rm[li] = mm.m;
            rs[li] = mm.s;
            ru[li] = mm.u;
            rq[li] = mm.q;
        }
        workgroupBarrier();
    }
    let out = St(rm[0], rs[0], ru[0], rq[0]);
    workgroupBarrier();
    return out;
}

fn write_stats(r: u32, st: St, zt: f32) {
    let ln_s = log(st.s);
    let lse = st.m + ln_s;
    o_logp[p.o_off + r] = zt - lse;
    o_ent[p.o_off + r] = max(ln_s - st.u / st.s, 0.0);
    o_p2[p.o_off + r] = st.q / (st.s * st.s);
    o_lse[p.o_off + r] = lse;
}

// token_stats in one pass: fold the whole row, finish, write the four statistics.
@compute @workgroup_size(256)
fn token_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let r = group_index(wid, nwg);
    if (r >= p.rows) {
        return;
    }
    let st = row_state(li, r);
    if (li == 0u) {
        let t = targets[p.t_off + r] - p.vocab_offset;
        write_stats(r, st, z_at(p.z_off + r * p.z_stride + t));
    }
}

// stats_fold: merge one vocabulary chunk into the stored state.
@compute @workgroup_size(256)
fn stats_fold(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let r = group_index(wid, nwg);
    if (r >= p.rows) {
        return;
    }
    let chunk = row_state(li, r);
    if (li == 0u) {
        let b = p.st_off + 5u * r;
        let cur = St(state[b], state[b + 1u], state[b + 2u], state[b + 3u]);
        let merged = st_merge(cur, chunk);
        state[b] = merged.m;
        state[b + 1u] = merged.s;
        state[b + 2u] = merged.u;
        state[b + 3u] = merged.q;
        let t = targets[p.t_off + r];
        if (t >= p.vocab_offset && t - p.vocab_offset < p.cols) {
            state[b + 4u] = z_at(p.z_off + r * p.z_stride + (t - p.vocab_offset));
        }
    }
}

// stats_finish: one thread per row.
@compute @workgroup_size(256)
fn stats_finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let r = group_index(wid, nwg) * 256u + li;
    if (r >= p.rows) {
        return;
    }
    let b = p.st_off + 5u * r;
    write_stats(r, St(state[b], state[b + 1u], state[b + 2u], state[b + 3u]), state[b + 4u]);
}

// d loss / d z = g_logp (1[v = y] - p) - g_H p (ln p + H): one workgroup per (row, 1024
// columns), four columns per thread (the row comes from the workgroup: no per-thread division).
@compute @workgroup_size(256)
fn stats_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let g = group_index(wid, nwg);
    let r = g / gp.blocks;
    if (r >= gp.rows) {
        return;
    }
    let c0 = (g % gp.blocks) * 1024u;
    let tgt = targets[gp.t_off + r];
    let gl = g_logp[gp.gl_off + r];
    var ge = 0.0;
    if (gp.has_ge == 1u) {
        ge = g_entropy[gp.ge_off + r];
    }
    let lse = g_lse[gp.lse_off + r];
    let ent = g_ent[gp.ent_off + r];
    for (var t = 0u; t < 4u; t++) {
        let c = c0 + 256u * t + li;
        if (c < gp.cols) {
            let v = z_at(gp.z_off + r * gp.z_stride + c);
            let is_t = tgt == gp.vocab_offset + c;
            var d = select(0.0, gl, is_t);
            if (!is_neg_inf(v)) {
                let lnp = v - lse;
                let pr = exp(lnp);
                if (pr > 0.0) {
                    d = gl * (select(0.0, 1.0, is_t) - pr) - ge * pr * (lnp + ent);
                }
            }
            dz[gp.o_off + r * gp.o_stride + c] = d;
        }
    }
}

// Packs [lse, entropy, d_logp, d_entropy] per row for the fused head backward's epilogue.
@compute @workgroup_size(256)
fn pack_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let r = group_index(wid, nwg) * 256u + li;
    if (r >= gp.rows) {
        return;
    }
    var ge = 0.0;
    if (gp.has_ge == 1u) {
        ge = g_entropy[gp.ge_off + r];
    }
    let o = gp.o_off + 4u * r;
    dz[o] = g_lse[gp.lse_off + r];
    dz[o + 1u] = g_ent[gp.ent_off + r];
    dz[o + 2u] = g_logp[gp.gl_off + r];
    dz[o + 3u] = ge;
}

// Masked row softmax of attention scores (the default attention composes it with matmuls):
// one workgroup per row, three passes (max, sum, write), masks evaluated in the shader.

struct SmP {
    rows: u32,
    cols: u32,
    s_off: u32,
    // Index of this dispatch's first row in the whole score matrix (masks depend on it).
    row0: u32,
    // 0 full, 1 causal, 2 segments.
    kind: u32,
    past: u32,
    scale: f32,
    nb: u32,
}

@group(0) @binding(0) var<uniform> p: SmP;
@group(0) @binding(1) var<storage, read_write> s: array<f32>;
@group(0) @binding(2) var<storage, read> bounds: array<u32>;

var<workgroup> red: array<f32, 256>;

// The segment of row r: the number of bounds <= r.
fn segment(r: u32) -> u32 {
    var lo = 0u;
    var hi = p.nb;
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (bounds[mid] <= r) {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return lo;
}

fn visible(i: u32, j: u32) -> bool {
    if (p.kind == 1u) {
        return j <= p.past + i;
    }
    if (p.kind == 2u) {
        return segment(i) == segment(j);
    }
    return true;
}

fn reduce(li: u32, v: f32, take_max: bool) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var st = 128u; st > 0u; st >>= 1u) {
        if (li < st) {
            if (take_max) {
                red[li] = max(red[li], red[li + st]);
            } else {
                red[li] = red[li] + red[li + st];
            }
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn masked_softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let r = group_index(wid, nwg);
    if (r >= p.rows) {
        return;
    }
    let i = p.row0 + r;
    let base = p.s_off + r * p.cols;
    var m = LOWEST;
    var seen = 0.0;
    for (var j = li; j < p.cols; j += 256u) {
        if (visible(i, j)) {
            m = max(m, p.scale * s[base + j]);
            seen = 1.0;
        }
    }
    let mx = reduce(li, m, true);
    let seen_any = reduce(li, seen, false);
    var sum = 0.0;
    for (var j = li; j < p.cols; j += 256u) {
        if (visible(i, j)) {
            sum += exp(p.scale * s[base + j] - mx);
        }
    }
    let total = reduce(li, sum, false);
    for (var j = li; j < p.cols; j += 256u) {
        var v = 0.0;
        if (seen_any > 0.0 && visible(i, j)) {
            v = exp(p.scale * s[base + j] - mx) / total;
        }
        s[base + j] = v;
    }
}

// Fused multi-head attention (flash-attention style): one workgroup per (16 query rows,
// head); key/value tiles of 16 rows staged in workgroup memory; an online softmax keeps the
// running max and sum per row, so scores never leave the workgroup. Grouped key/value heads
// (head h reads kv head h / group), every mask, head_dim <= 128.

struct AttP {
    n: u32,
    kv: u32,
    heads: u32,
    group: u32,
    hd: u32,
    q_off: u32,
    q_stride: u32,
    k_off: u32,
    k_stride: u32,
    v_off: u32,
    v_stride: u32,
    o_off: u32,
    kind: u32,
    past: u32,
    scale: f32,
    nb: u32,
}

@group(0) @binding(0) var<uniform> ap: AttP;
@group(0) @binding(3) var<storage, read> q: array<u32>;
@group(0) @binding(4) var<storage, read> k: array<u32>;
@group(0) @binding(5) var<storage, read> v: array<u32>;
@group(0) @binding(6) var<storage, read_write> att_out: array<f32>;

const BR: u32 = 16u;
const HD_MAX: u32 = 128u;

var<workgroup> q_s: array<f32, 2048>; // [BR][HD_MAX]
var<workgroup> k_s: array<f32, 2048>;
var<workgroup> v_s: array<f32, 2048>;
var<workgroup> p_s: array<f32, 256>; // [BR][BR]
var<workgroup> jb_s: u32;
var<workgroup> je_s: u32;

fn att_segment(r: u32) -> u32 {
    var lo = 0u;
    var hi = ap.nb;
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (bounds[mid] <= r) {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return lo;
}

fn att_visible(i: u32, j: u32) -> bool {
    if (ap.kind == 1u) {
        return j <= ap.past + i;
    }
    if (ap.kind == 2u) {
        return att_segment(i) == att_segment(j);
    }
    return true;
}

@compute @workgroup_size(256)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let g = group_index(wid, nwg);
    let h = g % ap.heads;
    let row0 = (g / ap.heads) * BR;
    if (row0 >= ap.n) {
        return;
    }
    let kvh = h / ap.group;
    let tx = li % BR;
    let ty = li / BR;
    let i = row0 + ty;
    // Stage the query tile.
    for (var e = li; e < BR * ap.hd; e += 256u) {
        let r = e / ap.hd;
        let d = e % ap.hd;
        var val = 0.0;
        if (row0 + r < ap.n) {
            val = q_at(ap.q_off + (row0 + r) * ap.q_stride + h * ap.hd + d);
        }
        q_s[r * HD_MAX + d] = val;
    }
    // The keys any row of this tile may see (made workgroup-uniform for the loop's barriers).
    if (li == 0u) {
        var jb = 0u;
        var je = ap.kv;
        let last = min(row0 + BR, ap.n) - 1u;
        if (ap.kind == 1u) {
            je = min(ap.kv, ap.past + last + 1u);
        } else if (ap.kind == 2u) {
            jb = bounds[att_segment(row0) - 1u];
            je = bounds[att_segment(last)];
        }
        jb_s = jb;
        je_s = je;
    }
    let j_begin = workgroupUniformLoad(&jb_s);
    let j_end = workgroupUniformLoad(&je_s);
    var m = LOWEST;
    var l = 0.0;
    var acc: array<f32, 8>;
    for (var j0 = j_begin; j0 < j_end; j0 += BR) {
        workgroupBarrier();
        for (var e = li; e < BR * ap.hd; e += 256u) {
            let r = e / ap.hd;
            let d = e % ap.hd;
            var kval = 0.0;
            var vval = 0.0;
            if (j0 + r < j_end) {
                kval = k_at(ap.k_off + (j0 + r) * ap.k_stride + kvh * ap.hd + d);
                vval = v_at(ap.v_off + (j0 + r) * ap.v_stride + kvh * ap.hd + d);
            }
            k_s[r * HD_MAX + d] = kval;
            v_s[r * HD_MAX + d] = vval;
        }
        workgroupBarrier();
        // Score of (row ty, key tx).
        let j = j0 + tx;
        var sc = LOWEST;
        var ok = false;
        if (i < ap.n && j < j_end && att_visible(i, j)) {
            var dot = 0.0;
            for (var d = 0u; d < ap.hd; d++) {
                dot = fma(q_s[ty * HD_MAX + d], k_s[tx * HD_MAX + d], dot);
            }
            sc = ap.scale * dot;
            ok = true;
        }
        p_s[ty * BR + tx] = sc;
        workgroupBarrier();
        var tile_max = LOWEST;
        for (var c = 0u; c < BR; c++) {
            tile_max = max(tile_max, p_s[ty * BR + c]);
        }
        let m_new = max(m, tile_max);
        workgroupBarrier();
        var pv = 0.0;
        if (ok) {
            pv = exp(sc - m_new);
        }
        p_s[ty * BR + tx] = pv;
        workgroupBarrier();
        let alpha = exp(m - m_new);
        var rowsum = 0.0;
        for (var c = 0u; c < BR; c++) {
            rowsum += p_s[ty * BR + c];
        }
        l = l * alpha + rowsum;
        m = m_new;
        for (var t = 0u; t < 8u; t++) {
            let d = tx + BR * t;
            if (d < ap.hd) {
                var s = acc[t] * alpha;
                for (var c = 0u; c < BR; c++) {
                    s = fma(p_s[ty * BR + c], v_s[c * HD_MAX + d], s);
                }
                acc[t] = s;
            }
        }
    }
    if (i < ap.n) {
        let width = ap.heads * ap.hd;
        for (var t = 0u; t < 8u; t++) {
            let d = tx + BR * t;
            if (d < ap.hd) {
                var val = 0.0;
                if (l > 0.0) {
                    val = acc[t] / l;
                }
                att_out[ap.o_off + i * width + h * ap.hd + d] = val;
            }
        }
    }
}

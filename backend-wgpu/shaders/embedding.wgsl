// Row gathers (embedding lookup) and scatters (merging image embeddings, DeepStack).

struct GatherP {
    n: u32,
    cols: u32,
    t_off: u32,
    t_stride: u32,
    // The table block this dispatch sees: ids in [r0, r1).
    r0: u32,
    r1: u32,
    ids_off: u32,
    o_off: u32,
}

struct ScatterP {
    groups: u32,
    cols: u32,
    d_off: u32,
    d_stride: u32,
    s_off: u32,
    s_stride: u32,
    // 0 replace, 1 add.
    mode: u32,
    // First destination row of the window.
    r0: u32,
    g_off: u32,
}

@group(0) @binding(0) var<uniform> gp: GatherP;
@group(0) @binding(0) var<uniform> sp: ScatterP;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;
@group(0) @binding(4) var<storage, read> src: array<u32>;
@group(0) @binding(5) var<storage, read> uniq: array<u32>;
@group(0) @binding(6) var<storage, read> starts: array<u32>;
@group(0) @binding(7) var<storage, read> order: array<u32>;

// One thread per output element; rows whose id is outside this dispatch's table block are
// left to another dispatch.
@compute @workgroup_size(256)
fn gather_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let e = group_index(wid, nwg) * 256u + li;
    if (e >= gp.n * gp.cols) {
        return;
    }
    let i = e / gp.cols;
    let c = e % gp.cols;
    let id = ids[gp.ids_off + i];
    if (id < gp.r0 || id >= gp.r1) {
        return;
    }
    o[gp.o_off + i * gp.cols + c] = table_at(gp.t_off + (id - gp.r0) * gp.t_stride + c);
}

// One thread per (destination row, column): the sources aimed at that row, in their original
// order (`order[starts[g]..starts[g + 1]]`), replace it (the last wins) or are added to it, so
// repeated rows never race.
@compute @workgroup_size(256)
fn scatter_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let e = group_index(wid, nwg) * 256u + li;
    if (e >= sp.groups * sp.cols) {
        return;
    }
    let g = sp.g_off + e / sp.cols;
    let c = e % sp.cols;
    let d = sp.d_off + (uniq[g] - sp.r0) * sp.d_stride + c;
    var acc = 0.0;
    if (sp.mode == 1u) {
        acc = o[d];
    }
    for (var k = starts[g]; k < starts[g + 1u]; k++) {
        let v = src_at(sp.s_off + order[k] * sp.s_stride + c);
        if (sp.mode == 1u) {
            acc += v;
        } else {
            acc = v;
        }
    }
    o[d] = acc;
}

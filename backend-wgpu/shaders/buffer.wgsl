// Row copies between strided views, with conversion into f32, bf16 or f16 destinations.

struct CopyP {
    rows: u32,
    cols: u32,
    s_off: u32,
    s_stride: u32,
    d_off: u32,
    d_stride: u32,
    // copy_half: destination words in the window, and 1 = bf16, 2 = f16.
    words: u32,
    mode: u32,
    // copy_f32 / copy_u32: workgroups per row (each covers 1024 columns).
    blocks: u32,
}

@group(0) @binding(0) var<uniform> p: CopyP;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst_words: array<u32>;

// One workgroup per (row, 1024 columns): float source into an f32 destination.
@compute @workgroup_size(256)
fn copy_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let g = group_index(wid, nwg);
    let r = g / p.blocks;
    if (r >= p.rows) {
        return;
    }
    let c0 = (g % p.blocks) * 1024u;
    for (var t = 0u; t < 4u; t++) {
        let c = c0 + 256u * t + li;
        if (c < p.cols) {
            dst[p.d_off + r * p.d_stride + c] = src_at(p.s_off + r * p.s_stride + c);
        }
    }
}

// One workgroup per (row, 1024 columns): u32 into u32, bit for bit.
@compute @workgroup_size(256)
fn copy_u32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let g = group_index(wid, nwg);
    let r = g / p.blocks;
    if (r >= p.rows) {
        return;
    }
    let c0 = (g % p.blocks) * 1024u;
    for (var t = 0u; t < 4u; t++) {
        let c = c0 + 256u * t + li;
        if (c < p.cols) {
            dst_words[p.d_off + r * p.d_stride + c] = src[p.s_off + r * p.s_stride + c];
        }
    }
}

// One thread per 32-bit word of a half-precision destination: each of the word's two halves
// is rewritten if it lies in the view and kept otherwise, so no two threads share a word.
@compute @workgroup_size(256)
fn copy_half(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let w = group_index(wid, nwg) * 256u + li;
    if (w >= p.words) {
        return;
    }
    var word = dst_words[w];
    let old = word;
    for (var h = 0u; h < 2u; h++) {
        let e = 2u * w + h;
        if (e < p.d_off) {
            continue;
        }
        let pos = e - p.d_off;
        let r = pos / p.d_stride;
        let c = pos % p.d_stride;
        if (r >= p.rows || c >= p.cols) {
            continue;
        }
        let v = src_at(p.s_off + r * p.s_stride + c);
        var bits: u32;
        if (p.mode == 1u) {
            bits = bf16_bits(v);
        } else {
            bits = f16_bits(v);
        }
        let shift = 16u * h;
        word = (word & ~(0xffffu << shift)) | (bits << shift);
    }
    if (word != old) {
        dst_words[w] = word;
    }
}

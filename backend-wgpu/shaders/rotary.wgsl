// Rotate-half rotary embedding in place, per-row cos/sin tables (interleaved MRoPE and the
// vision tower's 2D rotary differ only in their tables). One thread per rotated pair.

struct RotP {
    rows: u32,
    heads: u32,
    hd: u32,
    x_off: u32,
    cs_off: u32,
    sn_off: u32,
}

@group(0) @binding(0) var<uniform> p: RotP;
@group(0) @binding(1) var<storage, read> cs: array<u32>;
@group(0) @binding(2) var<storage, read> sn: array<u32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn rotary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let idx = group_index(wid, nwg) * 256u + li;
    let half_d = p.hd / 2u;
    if (idx >= p.rows * p.heads * half_d) {
        return;
    }
    let i = idx % half_d;
    let rh = idx / half_d;
    let r = rh / p.heads;
    let base = p.x_off + rh * p.hd;
    let t = r * p.hd;
    let a = x[base + i];
    let b = x[base + i + half_d];
    x[base + i] = a * cs_at(p.cs_off + t + i) - b * sn_at(p.sn_off + t + i);
    x[base + i + half_d] = b * cs_at(p.cs_off + t + i + half_d) + a * sn_at(p.sn_off + t + i + half_d);
}

// norm.cu: RMSNorm and LayerNorm (one block per row, f32 statistics), and the fused per-head
// RMSNorm + rotary of Qwen3's q/k projections (one warp per (row, head)).

extern "C" __global__ void rms_norm(const void* x, u32 xdt, const void* w, u32 wdt, float* out,
                                    u32 d, float eps) {
    __shared__ float scratch[32];
    const u64 base = (u64)blockIdx.x * d;
    float ss = 0.0f;
    for (u32 j = threadIdx.x; j < d; j += blockDim.x) {
        const float v = ld_any(x, xdt, base + j);
        ss = fmaf(v, v, ss);
    }
    ss = block_sum(ss, scratch);
    const float inv = rsqrtf(ss / (float)d + eps);
    for (u32 j = threadIdx.x; j < d; j += blockDim.x) {
        const float v = ld_any(x, xdt, base + j);
        out[base + j] = round_to(xdt, v * inv) * ld_any(w, wdt, j);
    }
}

extern "C" __global__ void layer_norm(const void* x, u32 xdt, const void* w, u32 wdt,
                                      const void* b, u32 bdt, float* out, u32 d, float eps) {
    __shared__ float scratch[32];
    const u64 base = (u64)blockIdx.x * d;
    float s = 0.0f;
    for (u32 j = threadIdx.x; j < d; j += blockDim.x) {
        s += ld_any(x, xdt, base + j);
    }
    const float mean = block_sum(s, scratch) / (float)d;
    float v2 = 0.0f;
    for (u32 j = threadIdx.x; j < d; j += blockDim.x) {
        const float c = ld_any(x, xdt, base + j) - mean;
        v2 = fmaf(c, c, v2);
    }
    const float var = block_sum(v2, scratch) / (float)d;
    const float inv = rsqrtf(var + eps);
    for (u32 j = threadIdx.x; j < d; j += blockDim.x) {
        const float c = (ld_any(x, xdt, base + j) - mean) * inv;
        out[base + j] = round_to(xdt, c) * ld_any(w, wdt, j) + ld_any(b, bdt, j);
    }
}

// Per-head RMSNorm (weight of width hd) then rotary with the row's cos/sin tables (rows x hd).
// Block: 4 warps, each one (row, head) pair; hd <= 256.
extern "C" __global__ void rms_norm_rotary(const void* x, u32 xdt, const void* w, u32 wdt,
                                           float eps, const void* cosb, u32 cdt,
                                           const void* sinb, u32 sdt, u32 rows, u32 heads,
                                           u32 hd, float* out) {
    __shared__ float ys[4][256];
    const u32 warp = threadIdx.x >> 5;
    const u32 lane = threadIdx.x & 31u;
    const u64 pair = (u64)blockIdx.x * 4u + warp;
    if (pair >= (u64)rows * heads) {
        return;
    }
    const u64 r = pair / heads;
    const u64 base = pair * hd;
    float ss = 0.0f;
    for (u32 j = lane; j < hd; j += 32u) {
        const float v = ld_any(x, xdt, base + j);
        ss = fmaf(v, v, ss);
    }
    ss = warp_sum(ss);
    const float inv = rsqrtf(ss / (float)hd + eps);
    for (u32 j = lane; j < hd; j += 32u) {
        ys[warp][j] = round_to(xdt, ld_any(x, xdt, base + j) * inv) * ld_any(w, wdt, j);
    }
    __syncwarp();
    const u32 half = hd / 2u;
    const u64 tb = r * hd;
    for (u32 j = lane; j < half; j += 32u) {
        const float a = ys[warp][j];
        const float b = ys[warp][j + half];
        out[base + j] = a * ld_any(cosb, cdt, tb + j) - b * ld_any(sinb, sdt, tb + j);
        out[base + j + half] =
            b * ld_any(cosb, cdt, tb + j + half) + a * ld_any(sinb, sdt, tb + j + half);
    }
}

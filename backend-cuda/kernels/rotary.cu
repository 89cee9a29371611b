// rotary.cu: rotate-half rotary embeddings in place; one thread per rotated pair. The tables
// (rows x hd) carry the positions, so the same kernel serves the text decoder's interleaved
// MRoPE and the vision tower's 2D rotary.

extern "C" __global__ void rotary(void* x, u32 xdt, const void* cosb, u32 cdt, const void* sinb,
                                  u32 sdt, u32 rows, u32 heads, u32 hd) {
    const u32 half = hd / 2u;
    const u64 n = (u64)rows * heads * half;
    for (u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x; t < n;
         t += (u64)gridDim.x * blockDim.x) {
        const u64 i = t % half;
        const u64 rh = t / half;
        const u64 r = rh / heads;
        const u64 base = rh * hd;
        const u64 tb = r * hd;
        const float a = ld_any(x, xdt, base + i);
        const float b = ld_any(x, xdt, base + i + half);
        st_any(x, xdt, base + i, a * ld_any(cosb, cdt, tb + i) - b * ld_any(sinb, sdt, tb + i));
        st_any(x, xdt, base + i + half,
               b * ld_any(cosb, cdt, tb + i + half) + a * ld_any(sinb, sdt, tb + i + half));
    }
}

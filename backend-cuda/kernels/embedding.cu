// embedding.cu: row gathers (embedding lookup) and scatters (image-embedding merge, DeepStack
// injection). Indices are validated on the host; a scatter launch never holds a destination
// row twice (the host splits duplicates into ordered launches).

extern "C" __global__ void gather_rows(const void* table, u32 tdt, u64 ts, const u32* ids, u32 n,
                                       u32 cols, float* out) {
    const u64 total = (u64)n * cols;
    for (u64 e = (u64)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (u64)gridDim.x * blockDim.x) {
        const u64 i = e / cols;
        const u64 c = e % cols;
        out[e] = ld_any(table, tdt, (u64)ids[i] * ts + c);
    }
}

extern "C" __global__ void scatter_rows(void* dst, u32 ddt, u64 ds, const u32* rows,
                                        const u32* src_rows, u32 n, const void* src, u32 sdt,
                                        u64 ss, u32 cols, u32 add) {
    const u64 total = (u64)n * cols;
    for (u64 e = (u64)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (u64)gridDim.x * blockDim.x) {
        const u64 i = e / cols;
        const u64 c = e % cols;
        const u64 d = (u64)rows[i] * ds + c;
        float v = ld_any(src, sdt, (u64)src_rows[i] * ss + c);
        if (add != 0u) {
            v += ld_any(dst, ddt, d);
        }
        st_any(dst, ddt, d, v);
    }
}

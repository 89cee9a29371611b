// buffer.cu: strided row copies with element-type conversion (the KV-cache append), dense
// conversions (operand casts for the GEMMs) and fills.

// dst[r * ds + c] = src[r * ss + c] for r < rows, c < cols, converting between float types
// (or copying u32 to u32). Grid: x over columns, y strides over rows.
extern "C" __global__ void copy_rows(const void* src, u32 sdt, u64 ss, void* dst, u32 ddt, u64 ds,
                                     u32 rows, u32 cols) {
    const u32 c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) {
        return;
    }
    for (u32 r = blockIdx.y; r < rows; r += gridDim.y) {
        if (sdt == DT_U32) {
            ((u32*)dst)[(u64)r * ds + c] = ((const u32*)src)[(u64)r * ss + c];
        } else {
            st_any(dst, ddt, (u64)r * ds + c, ld_any(src, sdt, (u64)r * ss + c));
        }
    }
}

// The same for same-type rows whose starts and strides are 16-byte aligned: 16-byte moves.
extern "C" __global__ void copy_rows_vec16(const uint4* src, u64 ss16, uint4* dst, u64 ds16,
                                           u32 rows, u32 cols16) {
    const u32 c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols16) {
        return;
    }
    for (u32 r = blockIdx.y; r < rows; r += gridDim.y) {
        dst[(u64)r * ds16 + c] = src[(u64)r * ss16 + c];
    }
}

// dst[i] = src[i] for i < n, converting between float types.
extern "C" __global__ void convert(const void* src, u32 sdt, void* dst, u32 ddt, u64 n) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (u64)gridDim.x * blockDim.x) {
        st_any(dst, ddt, i, ld_any(src, sdt, i));
    }
}

// p[i] = value for i < n.
extern "C" __global__ void fill_f32(float* p, u64 n, float value) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (u64)gridDim.x * blockDim.x) {
        p[i] = value;
    }
}

// Fills `rows` states of the online softmax with the initial value.
extern "C" __global__ void stats_init(float* state, u32 rows) {
    const u32 r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r < rows) {
        float* s = state + (u64)r * 5u;
        s[0] = -F32_MAX;
        s[1] = 0.0f;
        s[2] = 0.0f;
        s[3] = 0.0f;
        s[4] = 0.0f;
    }
}

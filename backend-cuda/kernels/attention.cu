// attention.cu: masked softmax, and three fused attention kernels that never hold a score
// matrix in device memory:
//   attn_core_*    exact f32 arithmetic on CUDA cores, any float inputs (the f32 path);
//   attn_mma_*     FlashAttention-2 style with bf16/f16 tensor-core mma.sync, f32 accumulation;
//   attn_decode_*  split-KV decoding for a few query rows against a long KV cache (GQA heads of
//                  one KV head share each K/V load), followed by attn_decode_combine.
// Masks: 0 = full, 1 = causal with `past` cached positions, 2 = segments (block diagonal,
// `bounds` = [0, b1, ..., n] in device memory). Query head h reads KV head h / (heads/kv_heads).

#define MASK_FULL 0u
#define MASK_CAUSAL 1u
#define MASK_SEGMENTS 2u

// The segment [lo, hi) that holds row `r` (bounds sorted, bounds[0] = 0, bounds[nb-1] = n).
__device__ __forceinline__ void segment_of(const u32* bounds, u32 nb, u32 r, u32* lo, u32* hi) {
    // Last bound <= r (partition point), as the CPU reference.
    u32 a = 0;
    u32 b = nb;
    while (a < b) {
        const u32 mid = (a + b) >> 1;
        if (bounds[mid] <= r) {
            a = mid + 1;
        } else {
            b = mid;
        }
    }
    // a = number of bounds <= r; the segment starts at bounds[a-1], ends at bounds[a].
    *lo = a > 0 ? bounds[a - 1] : 0u;
    *hi = a < nb ? bounds[a] : *lo;
}

// Keys visible to query row i: [lo, hi).
__device__ __forceinline__ void visible_range(u32 mask, u32 past, const u32* bounds, u32 nb,
                                              u32 kv_rows, u32 i, u32* lo, u32* hi) {
    if (mask == MASK_CAUSAL) {
        *lo = 0;
        const u32 e = past + i + 1u;
        *hi = e < kv_rows ? e : kv_rows;
    } else if (mask == MASK_SEGMENTS) {
        segment_of(bounds, nb, i, lo, hi);
    } else {
        *lo = 0;
        *hi = kv_rows;
    }
}

// Row softmax of scale * scores over visible entries; one block per row.
extern "C" __global__ void masked_softmax(float* scores, u32 rows, u32 cols, u32 mask, u32 past,
                                          const u32* bounds, u32 nb, float scale) {
    __shared__ float scratch[32];
    const u32 i = blockIdx.x;
    float* row = scores + (u64)i * cols;
    u32 lo;
    u32 hi;
    visible_range(mask, past, bounds, nb, cols, i, &lo, &hi);
    float mx = -f32_inf();
    for (u32 j = lo + threadIdx.x; j < hi; j += blockDim.x) {
        mx = fmaxf(mx, row[j] * scale);
    }
    mx = block_max(mx, scratch);
    float sum = 0.0f;
    if (mx != -f32_inf()) {
        for (u32 j = lo + threadIdx.x; j < hi; j += blockDim.x) {
            sum += expf(row[j] * scale - mx);
        }
    }
    sum = block_sum(sum, scratch);
    for (u32 j = threadIdx.x; j < cols; j += blockDim.x) {
        float p = 0.0f;
        if (j >= lo && j < hi && mx != -f32_inf() && sum > 0.0f) {
            p = expf(row[j] * scale - mx) / sum;
        }
        row[j] = p;
    }
}

// ---------------------------------------------------------------------------------------------
// Exact f32 flash attention on CUDA cores. Block: 128 threads = 32 query rows x 4 threads; each
// thread owns the interleaved dims c, c+4, c+8, ... of its row (q and the output accumulator in
// registers). K/V tiles of BK keys are staged in shared memory as f32.

template <int HD, int BK>
__device__ void attn_core_impl(const void* q, u32 qdt, u64 qs, const void* k, u32 kdt, u64 ks,
                               const void* v, u32 vdt, u64 vs, float* out, u64 os, u32 q_rows,
                               u32 kv_rows, u32 heads, u32 kv_heads, u32 hd, float scale,
                               u32 mask, u32 past, const u32* bounds, u32 nb) {
    const int D4 = HD / 4;
    __shared__ float Ks[BK][HD];
    __shared__ float Vs[BK][HD];
    const u32 h = blockIdx.y;
    const u32 g = h / (heads / kv_heads);
    const u32 tid = threadIdx.x;
    const u32 rloc = tid >> 2;
    const u32 c = tid & 3u;
    const u32 q0 = blockIdx.x * 32u;
    const u32 i = q0 + rloc;
    const bool row_ok = i < q_rows;
    float qr[D4];
    float acc[D4];
#pragma unroll
    for (int t = 0; t < D4; ++t) {
        const u32 d = c + 4u * (u32)t;
        qr[t] = (row_ok && d < hd) ? ld_any(q, qdt, (u64)i * qs + (u64)h * hd + d) * scale : 0.0f;
        acc[t] = 0.0f;
    }
    u32 lo = 0;
    u32 hi = 0;
    if (row_ok) {
        visible_range(mask, past, bounds, nb, kv_rows, i, &lo, &hi);
    }
    // The block's key range: union of its rows' ranges.
    u32 blo;
    u32 bhi;
    {
        const u32 last = (q0 + 31u < q_rows ? q0 + 31u : q_rows - 1u);
        u32 l0, h0, l1, h1;
        visible_range(mask, past, bounds, nb, kv_rows, q0, &l0, &h0);
        visible_range(mask, past, bounds, nb, kv_rows, last, &l1, &h1);
        blo = l0 < l1 ? l0 : l1;
        bhi = h0 > h1 ? h0 : h1;
        if (mask == MASK_FULL) {
            blo = 0;
            bhi = kv_rows;
        }
    }
    float m = -f32_inf();
    float l = 0.0f;
    for (u32 k0 = blo; k0 < bhi; k0 += BK) {
        __syncthreads();
        for (u32 e = tid; e < (u32)BK * (u32)HD; e += blockDim.x) {
            const u32 kk = e / (u32)HD;
            const u32 d = e % (u32)HD;
            const u32 key = k0 + kk;
            const bool ok = key < bhi && d < hd;
            Ks[kk][d] = ok ? ld_any(k, kdt, (u64)key * ks + (u64)g * hd + d) : 0.0f;
            Vs[kk][d] = ok ? ld_any(v, vdt, (u64)key * vs + (u64)g * hd + d) : 0.0f;
        }
        __syncthreads();
        float s[BK];
        float tmax = -f32_inf();
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float part = 0.0f;
#pragma unroll
            for (int t = 0; t < D4; ++t) {
                part = fmaf(qr[t], Ks[kk][c + 4 * t], part);
            }
            part += __shfl_xor_sync(0xffffffffu, part, 1);
            part += __shfl_xor_sync(0xffffffffu, part, 2);
            const u32 key = k0 + (u32)kk;
            const bool vis = row_ok && key >= lo && key < hi;
            s[kk] = vis ? part : -f32_inf();
            tmax = fmaxf(tmax, s[kk]);
        }
        if (tmax == -f32_inf()) {
            continue;
        }
        const float mnew = fmaxf(m, tmax);
        const float alpha = m == -f32_inf() ? 0.0f : expf(m - mnew);
        l *= alpha;
#pragma unroll
        for (int t = 0; t < D4; ++t) {
            acc[t] *= alpha;
        }
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            const float p = s[kk] == -f32_inf() ? 0.0f : expf(s[kk] - mnew);
            l += p;
#pragma unroll
            for (int t = 0; t < D4; ++t) {
                acc[t] = fmaf(p, Vs[kk][c + 4 * t], acc[t]);
            }
        }
        m = mnew;
    }
    if (row_ok) {
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
        for (int t = 0; t < D4; ++t) {
            const u32 d = c + 4u * (u32)t;
            if (d < hd) {
                out[(u64)i * os + (u64)h * hd + d] = acc[t] * inv;
            }
        }
    }
}

#define ATTN_CORE(HD, BK)                                                                      \
    extern "C" __global__ void __launch_bounds__(128) attn_core_##HD(                          \
        const void* q, u32 qdt, u64 qs, const void* k, u32 kdt, u64 ks, const void* v,        \
        u32 vdt, u64 vs, float* out, u64 os, u32 q_rows, u32 kv_rows, u32 heads,              \
        u32 kv_heads, u32 hd, float scale, u32 mask, u32 past, const u32* bounds, u32 nb) {   \
        attn_core_impl<HD, BK>(q, qdt, qs, k, kdt, ks, v, vdt, vs, out, os, q_rows, kv_rows,  \
                               heads, kv_heads, hd, scale, mask, past, bounds, nb);           \
    }

ATTN_CORE(64, 32)
ATTN_CORE(128, 32)
ATTN_CORE(256, 16)

// ---------------------------------------------------------------------------------------------
// Tensor-core flash attention (bf16 or f16 inputs, f32 accumulation, P rounded to the input
// type before P.V as FlashAttention does). Block: 4 warps x 16 query rows = 64 rows, one head;
// K tiles of 64 keys in shared memory (row-major, padded), V tiles transposed (padded) so that
// both B fragments are single 32-bit shared loads without bank conflicts.

__device__ __forceinline__ u32 pack2(float lo, float hi, bf16*) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ u32 pack2(float lo, float hi, f16*) {
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ void mma16816(float* d, const u32* a, u32 b0, u32 b1, bf16*) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma16816(float* d, const u32* a, u32 b0, u32 b1, f16*) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <typename T>
__device__ __forceinline__ u16 ld_bits(const T* p, u64 i, bool ok) {
    return ok ? p[i].bits : (u16)0;
}

template <typename T, int HDP>
__device__ void attn_mma_impl(const T* __restrict__ q, u64 qs, const T* __restrict__ k, u64 ks,
                              const T* __restrict__ v, u64 vs, float* __restrict__ out, u64 os,
                              u32 q_rows, u32 kv_rows, u32 heads, u32 kv_heads, u32 hd,
                              float scale, u32 mask, u32 past, const u32* bounds, u32 nb) {
    const int BK = 64;
    const int KP = HDP + 8;  // K row pitch (elements)
    const int VP = BK + 8;   // Vt row pitch (elements)
    const int NKS = HDP / 16;  // k-steps over the head dim
    const int NDT = HDP / 8;   // output n-tiles over the head dim
    __shared__ __align__(16) u16 Ksm[BK * KP];
    __shared__ __align__(16) u16 Vts[HDP * VP];
    const u32 h = blockIdx.y;
    const u32 g = h / (heads / kv_heads);
    const u32 warp = threadIdx.x >> 5;
    const u32 lane = threadIdx.x & 31u;
    const u32 gid = lane >> 2;  // group id: fragment row
    const u32 tig = lane & 3u;  // thread in group
    const u32 q0 = blockIdx.x * 64u;
    const u32 wr0 = q0 + warp * 16u;  // first row of this warp
    const u32 r_a = wr0 + gid;        // the two rows this thread holds
    const u32 r_b = r_a + 8u;
    const float sl2 = scale * LOG2E_F;

    // Q fragments (registers), rows beyond q_rows and dims beyond hd are zero.
    u32 qf[NKS][4];
#pragma unroll
    for (int s = 0; s < NKS; ++s) {
        const u32 c0 = (u32)s * 16u + tig * 2u;
        const u32 cols[4] = {c0, c0, c0 + 8u, c0 + 8u};
        const u32 rows[4] = {r_a, r_b, r_a, r_b};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const bool ok0 = rows[j] < q_rows && cols[j] < hd;
            const bool ok1 = rows[j] < q_rows && cols[j] + 1u < hd;
            const u64 base = (u64)rows[j] * qs + (u64)h * hd + cols[j];
            const u32 lo = ld_bits(q, base, ok0);
            const u32 hi = ld_bits(q, base + 1u, ok1);
            qf[s][j] = lo | (hi << 16);
        }
    }
    float o[NDT][4];
#pragma unroll
    for (int t = 0; t < NDT; ++t) {
        o[t][0] = o[t][1] = o[t][2] = o[t][3] = 0.0f;
    }
    float m_a = -f32_inf();
    float m_b = -f32_inf();
    float l_a = 0.0f;
    float l_b = 0.0f;
    u32 lo_a = 0, hi_a = 0, lo_b = 0, hi_b = 0;
    if (r_a < q_rows) {
        visible_range(mask, past, bounds, nb, kv_rows, r_a, &lo_a, &hi_a);
    }
    if (r_b < q_rows) {
        visible_range(mask, past, bounds, nb, kv_rows, r_b, &lo_b, &hi_b);
    }
    u32 blo;
    u32 bhi;
    {
        const u32 last = (q0 + 63u < q_rows ? q0 + 63u : q_rows - 1u);
        u32 l0, h0, l1, h1;
        visible_range(mask, past, bounds, nb, kv_rows, q0, &l0, &h0);
        visible_range(mask, past, bounds, nb, kv_rows, last, &l1, &h1);
        blo = l0 < l1 ? l0 : l1;
        bhi = h0 > h1 ? h0 : h1;
        if (mask == MASK_FULL) {
            blo = 0;
            bhi = kv_rows;
        }
    }
    blo = (blo / (u32)BK) * (u32)BK;
    for (u32 k0 = blo; k0 < bhi; k0 += (u32)BK) {
        __syncthreads();
        // Stage K (row-major) and V (transposed) for keys k0..k0+64, zero-padded.
        for (u32 e = threadIdx.x; e < (u32)BK * (u32)HDP; e += blockDim.x) {
            const u32 kk = e / (u32)HDP;
            const u32 d = e % (u32)HDP;
            const u32 key = k0 + kk;
            const bool ok = key < bhi && d < hd;
            Ksm[kk * KP + d] = ld_bits(k, (u64)key * ks + (u64)g * hd + d, ok);
            Vts[d * VP + kk] = ld_bits(v, (u64)key * vs + (u64)g * hd + d, ok);
        }
        __syncthreads();
        // S = Q K^T for 64 keys: 8 n-tiles of 8 keys.
        float s[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
            const u32 key = (u32)nt * 8u + gid;
#pragma unroll
            for (int st = 0; st < NKS; ++st) {
                const u32 d = (u32)st * 16u + tig * 2u;
                const u32 b0 = *(const u32*)&Ksm[key * KP + d];
                const u32 b1 = *(const u32*)&Ksm[key * KP + d + 8u];
                mma16816(s[nt], qf[st], b0, b1, (T*)0);
            }
        }
        // Mask, scale into the log2 domain, row maxima over the quad.
        float mx_a = -f32_inf();
        float mx_b = -f32_inf();
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                const u32 key = k0 + (u32)nt * 8u + tig * 2u + (u32)j;
                const bool va = key >= lo_a && key < hi_a;
                const bool vb = key >= lo_b && key < hi_b;
                s[nt][j] = va ? s[nt][j] * sl2 : -f32_inf();
                s[nt][2 + j] = vb ? s[nt][2 + j] * sl2 : -f32_inf();
                mx_a = fmaxf(mx_a, s[nt][j]);
                mx_b = fmaxf(mx_b, s[nt][2 + j]);
            }
        }
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
        const float mn_a = fmaxf(m_a, mx_a);
        const float mn_b = fmaxf(m_b, mx_b);
        const float al_a = (m_a == -f32_inf()) ? 0.0f : fast_exp2(m_a - mn_a);
        const float al_b = (m_b == -f32_inf()) ? 0.0f : fast_exp2(m_b - mn_b);
        float rs_a = 0.0f;
        float rs_b = 0.0f;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                const float pa = s[nt][j] == -f32_inf() ? 0.0f : fast_exp2(s[nt][j] - mn_a);
                const float pb =
                    s[nt][2 + j] == -f32_inf() ? 0.0f : fast_exp2(s[nt][2 + j] - mn_b);
                s[nt][j] = pa;
                s[nt][2 + j] = pb;
                rs_a += pa;
                rs_b += pb;
            }
        }
        rs_a += __shfl_xor_sync(0xffffffffu, rs_a, 1);
        rs_a += __shfl_xor_sync(0xffffffffu, rs_a, 2);
        rs_b += __shfl_xor_sync(0xffffffffu, rs_b, 1);
        rs_b += __shfl_xor_sync(0xffffffffu, rs_b, 2);
        l_a = l_a * al_a + rs_a;
        l_b = l_b * al_b + rs_b;
        m_a = mn_a;
        m_b = mn_b;
#pragma unroll
        for (int t = 0; t < NDT; ++t) {
            o[t][0] *= al_a;
            o[t][1] *= al_a;
            o[t][2] *= al_b;
            o[t][3] *= al_b;
        }
        // O += P V: 4 k-steps of 16 keys.
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
            u32 pa[4];
            pa[0] = pack2(s[2 * kk][0], s[2 * kk][1], (T*)0);
            pa[1] = pack2(s[2 * kk][2], s[2 * kk][3], (T*)0);
            pa[2] = pack2(s[2 * kk + 1][0], s[2 * kk + 1][1], (T*)0);
            pa[3] = pack2(s[2 * kk + 1][2], s[2 * kk + 1][3], (T*)0);
            const u32 kb = (u32)kk * 16u + tig * 2u;
#pragma unroll
            for (int t = 0; t < NDT; ++t) {
                const u32 d = (u32)t * 8u + gid;
                const u32 b0 = *(const u32*)&Vts[d * VP + kb];
                const u32 b1 = *(const u32*)&Vts[d * VP + kb + 8u];
                mma16816(o[t], pa, b0, b1, (T*)0);
            }
        }
    }
    const float inv_a = l_a > 0.0f ? 1.0f / l_a : 0.0f;
    const float inv_b = l_b > 0.0f ? 1.0f / l_b : 0.0f;
#pragma unroll
    for (int t = 0; t < NDT; ++t) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const u32 d = (u32)t * 8u + tig * 2u + (u32)j;
            if (d < hd) {
                if (r_a < q_rows) {
                    out[(u64)r_a * os + (u64)h * hd + d] = o[t][j] * inv_a;
                }
                if (r_b < q_rows) {
                    out[(u64)r_b * os + (u64)h * hd + d] = o[t][2 + j] * inv_b;
                }
            }
        }
    }
}

#define ATTN_MMA(SUF, T, HDP)                                                                  \
    extern "C" __global__ void __launch_bounds__(128) attn_mma_##SUF##_##HDP(                  \
        const T* q, u64 qs, const T* k, u64 ks, const T* v, u64 vs, float* out, u64 os,       \
        u32 q_rows, u32 kv_rows, u32 heads, u32 kv_heads, u32 hd, float scale, u32 mask,      \
        u32 past, const u32* bounds, u32 nb) {                                                 \
        attn_mma_impl<T, HDP>(q, qs, k, ks, v, vs, out, os, q_rows, kv_rows, heads, kv_heads, \
                              hd, scale, mask, past, bounds, nb);                              \
    }

ATTN_MMA(bf16, bf16, 64)
ATTN_MMA(bf16, bf16, 80)
ATTN_MMA(bf16, bf16, 96)
ATTN_MMA(bf16, bf16, 128)
ATTN_MMA(f16, f16, 64)
ATTN_MMA(f16, f16, 80)
ATTN_MMA(f16, f16, 96)
ATTN_MMA(f16, f16, 128)

// ---------------------------------------------------------------------------------------------
// Split-KV decoding. Grid (kv_heads, splits, q_rows), 128 threads. The 4 warps of a block take
// keys of the split in turn; every lane owns the interleaved dims lane, lane+32, ... and all
// `group` query heads of the KV head, so each K/V element is read once per block. Partial
// results (unnormalised accumulator, max, sum) go to `part_acc` / `part_ml`.

template <int HD, int GMAX>
__device__ void attn_decode_impl(const void* q, u32 qdt, u64 qs, const void* k, u32 kdt, u64 ks,
                                 const void* v, u32 vdt, u64 vs, u32 q_rows, u32 kv_rows,
                                 u32 heads, u32 kv_heads, u32 hd, float scale, u32 mask,
                                 u32 past, u32 split_len, float* part_acc, float* part_ml) {
    const int D = HD / 32;
    __shared__ float red_m[4][GMAX];
    __shared__ float red_l[4][GMAX];
    __shared__ float red_acc[4][GMAX][HD];
    const u32 kvh = blockIdx.x;
    const u32 split = blockIdx.y;
    const u32 i = blockIdx.z;
    const u32 group = heads / kv_heads;
    const u32 warp = threadIdx.x >> 5;
    const u32 lane = threadIdx.x & 31u;
    u32 lo;
    u32 hi;
    visible_range(mask, past, (const u32*)0, 0u, kv_rows, i, &lo, &hi);
    u32 k_begin = split * split_len;
    u32 k_end = k_begin + split_len;
    if (k_begin < lo) {
        k_begin = lo;
    }
    if (k_end > hi) {
        k_end = hi;
    }
    float qr[GMAX][D];
    float acc[GMAX][D];
    float m[GMAX];
    float l[GMAX];
#pragma unroll
    for (int gi = 0; gi < GMAX; ++gi) {
        const u32 h = kvh * group + (u32)gi;
#pragma unroll
        for (int t = 0; t < D; ++t) {
            const u32 d = lane + 32u * (u32)t;
            qr[gi][t] = ((u32)gi < group && d < hd)
                            ? ld_any(q, qdt, (u64)i * qs + (u64)h * hd + d) * scale
                            : 0.0f;
            acc[gi][t] = 0.0f;
        }
        m[gi] = -f32_inf();
        l[gi] = 0.0f;
    }
    for (u32 key = k_begin + warp; key < k_end; key += 4u) {
        float kr[D];
        float vr[D];
#pragma unroll
        for (int t = 0; t < D; ++t) {
            const u32 d = lane + 32u * (u32)t;
            const bool ok = d < hd;
            kr[t] = ok ? ld_any(k, kdt, (u64)key * ks + (u64)kvh * hd + d) : 0.0f;
            vr[t] = ok ? ld_any(v, vdt, (u64)key * vs + (u64)kvh * hd + d) : 0.0f;
        }
#pragma unroll
        for (int gi = 0; gi < GMAX; ++gi) {
            if ((u32)gi < group) {
                float part = 0.0f;
#pragma unroll
                for (int t = 0; t < D; ++t) {
                    part = fmaf(qr[gi][t], kr[t], part);
                }
                const float sc = warp_sum(part);
                const float mn = fmaxf(m[gi], sc);
                const float a = m[gi] == -f32_inf() ? 0.0f : expf(m[gi] - mn);
                const float p = expf(sc - mn);
                l[gi] = l[gi] * a + p;
#pragma unroll
                for (int t = 0; t < D; ++t) {
                    acc[gi][t] = fmaf(p, vr[t], acc[gi][t] * a);
                }
                m[gi] = mn;
            }
        }
    }
    // Merge the four warps.
#pragma unroll
    for (int gi = 0; gi < GMAX; ++gi) {
        if (lane == 0) {
            red_m[warp][gi] = m[gi];
            red_l[warp][gi] = l[gi];
        }
#pragma unroll
        for (int t = 0; t < D; ++t) {
            red_acc[warp][gi][lane + 32 * t] = acc[gi][t];
        }
    }
    __syncthreads();
    for (u32 e = threadIdx.x; e < group * (u32)HD; e += blockDim.x) {
        const u32 gi = e / (u32)HD;
        const u32 d = e % (u32)HD;
        float mx = -f32_inf();
        for (int w = 0; w < 4; ++w) {
            mx = fmaxf(mx, red_m[w][gi]);
        }
        float lsum = 0.0f;
        float a = 0.0f;
        if (mx != -f32_inf()) {
            for (int w = 0; w < 4; ++w) {
                const float f = red_m[w][gi] == -f32_inf() ? 0.0f : expf(red_m[w][gi] - mx);
                lsum += f * red_l[w][gi];
                a += f * red_acc[w][gi][d];
            }
        }
        const u32 h = kvh * group + gi;
        const u64 slot = ((u64)split * q_rows + i) * heads + h;
        if (d < hd) {
            part_acc[slot * hd + d] = a;
        }
        if (d == 0) {
            part_ml[slot * 2u] = mx;
            part_ml[slot * 2u + 1u] = lsum;
        }
    }
}

#define ATTN_DECODE(HD, GMAX)                                                                  \
    extern "C" __global__ void __launch_bounds__(128) attn_decode_##HD(                        \
        const void* q, u32 qdt, u64 qs, const void* k, u32 kdt, u64 ks, const void* v,        \
        u32 vdt, u64 vs, u32 q_rows, u32 kv_rows, u32 heads, u32 kv_heads, u32 hd,            \
        float scale, u32 mask, u32 past, u32 split_len, float* part_acc, float* part_ml) {    \
        attn_decode_impl<HD, GMAX>(q, qdt, qs, k, kdt, ks, v, vdt, vs, q_rows, kv_rows, heads, \
                                   kv_heads, hd, scale, mask, past, split_len, part_acc,       \
                                   part_ml);                                                   \
    }

ATTN_DECODE(64, 8)
ATTN_DECODE(128, 8)
ATTN_DECODE(256, 4)

// Combines the split partials of every (query row, head): grid (q_rows * heads), block 128.
extern "C" __global__ void attn_decode_combine(const float* part_acc, const float* part_ml,
                                               u32 splits, u32 q_rows, u32 heads, u32 hd,
                                               float* out, u64 os) {
    const u32 rh = blockIdx.x;
    const u32 i = rh / heads;
    const u32 h = rh % heads;
    float mx = -f32_inf();
    for (u32 s = 0; s < splits; ++s) {
        mx = fmaxf(mx, part_ml[(((u64)s * q_rows + i) * heads + h) * 2u]);
    }
    float lsum = 0.0f;
    if (mx != -f32_inf()) {
        for (u32 s = 0; s < splits; ++s) {
            const u64 slot = ((u64)s * q_rows + i) * heads + h;
            const float ms = part_ml[slot * 2u];
            if (ms != -f32_inf()) {
                lsum += expf(ms - mx) * part_ml[slot * 2u + 1u];
            }
        }
    }
    const float inv = lsum > 0.0f ? 1.0f / lsum : 0.0f;
    for (u32 d = threadIdx.x; d < hd; d += blockDim.x) {
        float a = 0.0f;
        if (mx != -f32_inf()) {
            for (u32 s = 0; s < splits; ++s) {
                const u64 slot = ((u64)s * q_rows + i) * heads + h;
                const float ms = part_ml[slot * 2u];
                if (ms != -f32_inf()) {
                    a += expf(ms - mx) * part_acc[slot * hd + d];
                }
            }
        }
        out[(u64)i * os + (u64)h * hd + d] = a * inv;
    }
}

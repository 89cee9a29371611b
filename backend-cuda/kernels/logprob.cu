// logprob.cu: the objective's op family. One thread block per row of logits; each thread walks
// the row with 16-byte vector loads (an unaligned head and tail are read element by element),
// keeps an online-softmax state in registers, and the block merges the states with warp
// shuffles. Every pointer is already offset to the first element of the view by the host.

template <typename T> struct VecInfo;
template <> struct VecInfo<float> { static const int W = 4; };
template <> struct VecInfo<bf16> { static const int W = 8; };
template <> struct VecInfo<f16> { static const int W = 8; };

__device__ __forceinline__ void unpack16(const uint4& v, float* z, float*) {
    z[0] = __uint_as_float(v.x);
    z[1] = __uint_as_float(v.y);
    z[2] = __uint_as_float(v.z);
    z[3] = __uint_as_float(v.w);
}
__device__ __forceinline__ void unpack_word_bf16(u32 w, float* z) {
    z[0] = __uint_as_float(w << 16);
    z[1] = __uint_as_float(w & 0xffff0000u);
}
__device__ __forceinline__ void unpack16(const uint4& v, float* z, bf16*) {
    unpack_word_bf16(v.x, z);
    unpack_word_bf16(v.y, z + 2);
    unpack_word_bf16(v.z, z + 4);
    unpack_word_bf16(v.w, z + 6);
}
__device__ __forceinline__ void unpack_word_f16(u32 w, float* z) {
    f16 a;
    f16 b;
    a.bits = (u16)(w & 0xffffu);
    b.bits = (u16)(w >> 16);
    z[0] = to_f32(a);
    z[1] = to_f32(b);
}
__device__ __forceinline__ void unpack16(const uint4& v, float* z, f16*) {
    unpack_word_f16(v.x, z);
    unpack_word_f16(v.y, z + 2);
    unpack_word_f16(v.z, z + 4);
    unpack_word_f16(v.w, z + 6);
}

// Number of leading elements of `row` before a 16-byte boundary (at most `cols`).
template <typename T>
__device__ __forceinline__ u32 head_len(const T* row, u32 cols) {
    const u32 mis = (u32)((u64)row & 15u);
    u32 h = mis == 0u ? 0u : (16u - mis) / (u32)sizeof(T);
    return h < cols ? h : cols;
}

// The online-softmax state of this thread's share of one row.
template <typename T>
__device__ __forceinline__ Online row_online(const T* __restrict__ row, u32 cols) {
    const int W = VecInfo<T>::W;
    Online st = online_empty();
    const u32 head = head_len(row, cols);
    for (u32 i = threadIdx.x; i < head; i += blockDim.x) {
        float z = to_f32(row[i]);
        online_push_n<1>(st, &z);
    }
    const uint4* __restrict__ vec = (const uint4*)(row + head);
    const u32 nvec = (cols - head) / (u32)W;
    u32 i = threadIdx.x;
    // Two 16-byte loads in flight per iteration.
    for (; i + blockDim.x < nvec; i += 2u * blockDim.x) {
        const uint4 a = vec[i];
        const uint4 b = vec[i + blockDim.x];
        float z[2 * W];
        unpack16(a, z, (T*)0);
        unpack16(b, z + W, (T*)0);
        online_push_n<2 * W>(st, z);
    }
    for (; i < nvec; i += blockDim.x) {
        const uint4 a = vec[i];
        float z[W];
        unpack16(a, z, (T*)0);
        online_push_n<W>(st, z);
    }
    for (u32 j = head + nvec * (u32)W + threadIdx.x; j < cols; j += blockDim.x) {
        float z = to_f32(row[j]);
        online_push_n<1>(st, &z);
    }
    return st;
}

// Folds a chunk of logits (rows x cols, row stride `stride`, vocabulary columns
// vocab_offset..) into the state (rows x 5 f32).
template <typename T>
__device__ void stats_fold_impl(const T* __restrict__ logits, u32 cols, u64 stride,
                                const u32* __restrict__ targets, u32 vocab_offset,
                                float* __restrict__ state) {
    __shared__ Online scratch[32];
    const u64 r = blockIdx.x;
    const T* row = logits + r * stride;
    Online st = row_online(row, cols);
    st = block_online(st, scratch);
    if (threadIdx.x == 0) {
        float* s = state + r * 5u;
        Online cur;
        cur.m = s[0];
        cur.s = s[1];
        cur.u = s[2];
        cur.q = s[3];
        const Online merged = online_merge(cur, st);
        s[0] = merged.m;
        s[1] = merged.s;
        s[2] = merged.u;
        s[3] = merged.q;
        const u32 t = targets[r];
        if (t >= vocab_offset && t - vocab_offset < cols) {
            s[4] = to_f32(row[t - vocab_offset]);
        }
    }
}

// One pass over whole rows: log p(target), entropy, sum p^2 and log-sum-exp per row.
template <typename T>
__device__ void token_stats_impl(const T* __restrict__ logits, u32 cols, u64 stride,
                                 const u32* __restrict__ targets, float* __restrict__ logp,
                                 float* __restrict__ entropy, float* __restrict__ sum_p2,
                                 float* __restrict__ lse) {
    __shared__ Online scratch[32];
    const u64 r = blockIdx.x;
    const T* row = logits + r * stride;
    Online st = row_online(row, cols);
    st = block_online(st, scratch);
    if (threadIdx.x == 0) {
        const float zt = to_f32(row[targets[r]]);
        const Finished f = online_finish(st, zt);
        logp[r] = (float)f.logp;
        entropy[r] = (float)f.entropy;
        sum_p2[r] = (float)f.sum_p2;
        lse[r] = (float)f.lse;
    }
}

// d loss / d logits for one chunk; `out` may have another element type and stride.
template <typename T, typename O>
__device__ void stats_backward_impl(const T* __restrict__ logits, u32 cols, u64 stride,
                                    const u32* __restrict__ targets, u32 vocab_offset,
                                    const float* __restrict__ lse,
                                    const float* __restrict__ entropy,
                                    const float* __restrict__ d_logp,
                                    const float* __restrict__ d_entropy, O* __restrict__ out,
                                    u64 out_stride) {
    const u64 r = blockIdx.x;
    const T* row = logits + r * stride;
    O* orow = out + r * out_stride;
    const float l = lse[r];
    const float h = entropy[r];
    const float gl = d_logp[r];
    const float ge = d_entropy ? d_entropy[r] : 0.0f;
    const u32 t = targets[r];
    for (u32 j = threadIdx.x; j < cols; j += blockDim.x) {
        const float z = to_f32(row[j]);
        orow[j] = from_f32<O>(logit_grad(z, vocab_offset + j == t, l, h, gl, ge));
    }
}

// Packs `n` f32 values as O and stores them with 16-byte stores at `dst` (16-byte aligned).
template <typename O, int N>
__device__ __forceinline__ void store_packed(O* dst, const float* g) {
    O tmp[N];
#pragma unroll
    for (int i = 0; i < N; ++i) {
        tmp[i] = from_f32<O>(g[i]);
    }
    const int WORDS = (N * (int)sizeof(O)) / 16;
#pragma unroll
    for (int k = 0; k < WORDS; ++k) {
        ((uint4*)dst)[k] = ((const uint4*)tmp)[k];
    }
}

// The fused row kernel of the linear objective: statistics, the per-token objective, and
// d loss / d logits written to `dz` (which may alias `logits` when O == T).
template <typename T, typename O>
__device__ void head_objective_impl(
    const T* logits, u32 cols, u64 stride, const u32* __restrict__ targets, ObjectiveParams p,
    const float* __restrict__ old_logp, const float* __restrict__ adv,
    const float* __restrict__ weight, const float* __restrict__ rollout_logp,
    const float* __restrict__ ref_logp, float* __restrict__ logp_out,
    float* __restrict__ entropy_out, float* __restrict__ sum_p2_out,
    float* __restrict__ lse_out, float* __restrict__ loss_out, float* __restrict__ d_logp_out,
    float* __restrict__ d_entropy_out, O* dz, u64 dz_stride) {
    __shared__ Online scratch[32];
    __shared__ float bcast[4];
    const u64 r = blockIdx.x;
    const T* row = logits + r * stride;
    O* drow = dz + r * dz_stride;
    const u32 t = targets[r];
    Online st = row_online(row, cols);
    st = block_online(st, scratch);
    if (threadIdx.x == 0) {
        const Finished f = online_finish(st, to_f32(row[t]));
        const TokenObjective o = token_objective(
            p, (double)(float)f.logp, (double)old_logp[r], (double)adv[r], (double)weight[r],
            rollout_logp ? (double)rollout_logp[r] : 0.0, ref_logp ? (double)ref_logp[r] : 0.0,
            (double)(float)f.entropy);
        logp_out[r] = (float)f.logp;
        entropy_out[r] = (float)f.entropy;
        sum_p2_out[r] = (float)f.sum_p2;
        lse_out[r] = (float)f.lse;
        loss_out[r] = (float)o.loss;
        d_logp_out[r] = (float)o.d_logp;
        d_entropy_out[r] = (float)o.d_entropy;
        bcast[0] = (float)f.lse;
        bcast[1] = (float)f.entropy;
        bcast[2] = (float)o.d_logp;
        bcast[3] = (float)o.d_entropy;
    }
    __syncthreads();
    const float l = bcast[0];
    const float h = bcast[1];
    const float gl = bcast[2];
    const float ge = bcast[3];
    const int W = VecInfo<T>::W;
    const u32 head = head_len(row, cols);
    for (u32 j = threadIdx.x; j < head; j += blockDim.x) {
        drow[j] = from_f32<O>(logit_grad(to_f32(row[j]), j == t, l, h, gl, ge));
    }
    const u32 nvec = (cols - head) / (u32)W;
    const bool packed = (((u64)(drow + head)) & 15u) == 0u &&
                        ((u32)sizeof(O) * (u32)W) % 16u == 0u;
    const uint4* vec = (const uint4*)(row + head);
    for (u32 i = threadIdx.x; i < nvec; i += blockDim.x) {
        const uint4 a = vec[i];
        float z[W];
        unpack16(a, z, (T*)0);
        const u32 j0 = head + i * (u32)W;
#pragma unroll
        for (int k = 0; k < W; ++k) {
            z[k] = logit_grad(z[k], j0 + (u32)k == t, l, h, gl, ge);
        }
        if (packed) {
            store_packed<O, W>(drow + j0, z);
        } else {
#pragma unroll
            for (int k = 0; k < W; ++k) {
                drow[j0 + k] = from_f32<O>(z[k]);
            }
        }
    }
    for (u32 j = head + nvec * (u32)W + threadIdx.x; j < cols; j += blockDim.x) {
        drow[j] = from_f32<O>(logit_grad(to_f32(row[j]), j == t, l, h, gl, ge));
    }
}

#define LOGPROB_T(SUF, T)                                                                      \
    extern "C" __global__ void stats_fold_##SUF(const T* logits, u32 cols, u64 stride,       \
                                                const u32* targets, u32 vocab_offset,        \
                                                float* state) {                              \
        stats_fold_impl<T>(logits, cols, stride, targets, vocab_offset, state);              \
    }                                                                                          \
    extern "C" __global__ void token_stats_##SUF(const T* logits, u32 cols, u64 stride,      \
                                                 const u32* targets, float* logp,            \
                                                 float* entropy, float* sum_p2, float* lse) { \
        token_stats_impl<T>(logits, cols, stride, targets, logp, entropy, sum_p2, lse);      \
    }

LOGPROB_T(f32, float)
LOGPROB_T(bf16, bf16)
LOGPROB_T(f16, f16)

#define LOGPROB_TO(SUF, T, OSUF, O)                                                            \
    extern "C" __global__ void stats_backward_##SUF##_##OSUF(                                 \
        const T* logits, u32 cols, u64 stride, const u32* targets, u32 vocab_offset,          \
        const float* lse, const float* entropy, const float* d_logp, const float* d_entropy,  \
        O* out, u64 out_stride) {                                                              \
        stats_backward_impl<T, O>(logits, cols, stride, targets, vocab_offset, lse, entropy,  \
                                  d_logp, d_entropy, out, out_stride);                         \
    }                                                                                          \
    extern "C" __global__ void head_objective_##SUF##_##OSUF(                                 \
        const T* logits, u32 cols, u64 stride, const u32* targets, ObjectiveParams p,         \
        const float* old_logp, const float* adv, const float* weight,                         \
        const float* rollout_logp, const float* ref_logp, float* logp, float* entropy,        \
        float* sum_p2, float* lse, float* loss, float* d_logp, float* d_entropy, O* dz,       \
        u64 dz_stride) {                                                                       \
        head_objective_impl<T, O>(logits, cols, stride, targets, p, old_logp, adv, weight,    \
                                  rollout_logp, ref_logp, logp, entropy, sum_p2, lse, loss,   \
                                  d_logp, d_entropy, dz, dz_stride);                           \
    }

LOGPROB_TO(f32, float, f32, float)
LOGPROB_TO(f32, float, bf16, bf16)
LOGPROB_TO(f32, float, f16, f16)
LOGPROB_TO(bf16, bf16, f32, float)
LOGPROB_TO(bf16, bf16, bf16, bf16)
LOGPROB_TO(bf16, bf16, f16, f16)
LOGPROB_TO(f16, f16, f32, float)
LOGPROB_TO(f16, f16, bf16, bf16)
LOGPROB_TO(f16, f16, f16, f16)

// Turns complete states (rows x 5) into the four per-row outputs.
extern "C" __global__ void stats_finish(const float* state, u32 rows, float* logp,
                                        float* entropy, float* sum_p2, float* lse) {
    const u32 r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) {
        return;
    }
    const float* s = state + (u64)r * 5u;
    Online st;
    st.m = s[0];
    st.s = s[1];
    st.u = s[2];
    st.q = s[3];
    const Finished f = online_finish(st, s[4]);
    logp[r] = (float)f.logp;
    entropy[r] = (float)f.entropy;
    sum_p2[r] = (float)f.sum_p2;
    lse[r] = (float)f.lse;
}

// objective.cu: the objective's per-token loss and gradient (see token_objective in the common
// header), one thread per token, so that a training step needs no device-to-host round trip
// between the statistics and their backward. Optional inputs are null pointers.

extern "C" __global__ void objective_tokens(u32 n, ObjectiveParams p, const float* logp,
                                            const float* old_logp, const float* adv,
                                            const float* weight, const float* rollout_logp,
                                            const float* ref_logp, const float* entropy,
                                            float* loss, float* d_logp, float* d_entropy) {
    const u32 i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) {
        return;
    }
    const TokenObjective o = token_objective(
        p, (double)logp[i], (double)old_logp[i], (double)adv[i], (double)weight[i],
        rollout_logp ? (double)rollout_logp[i] : 0.0, ref_logp ? (double)ref_logp[i] : 0.0,
        entropy ? (double)entropy[i] : 0.0);
    loss[i] = (float)o.loss;
    d_logp[i] = (float)o.d_logp;
    d_entropy[i] = (float)o.d_entropy;
}

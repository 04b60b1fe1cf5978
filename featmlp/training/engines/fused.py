"""One full-batch epoch of K stacked ReLU MLPs in one numba kernel: forward, softmax, loss and
gradients of all K networks per block of samples that stays in L1, on all cores.

Used by ``stacked._Engine`` for full-batch gradient descent (the lecture's sweep) with ReLU
and the MSE or cross-entropy head; everything else keeps the torch path. Why, measured on this
project's 2-core CPU, lecture sweep (10 networks, 20 epochs, 50,000 x 9): the torch path does
each op over the whole chunk (a dozen passes through memory per layer) and its epoch costs
~1.6 ms per network against 2.2 ms for ``train()`` alone; see ``stacked.py`` for this
kernel's figures.

Layout: a block of ``B`` samples is one flat float32 buffer of rows of ``B`` (input features,
then each layer's outputs), so every inner loop runs over ``B`` contiguous samples and
vectorises. Gradient sums over a block are float32 reductions (``reassoc``) added into float64
accumulators per chunk of samples; chunks run in parallel and their sums are added in a fixed
order, so results do not depend on thread timing. No ``nnan``/``ninf``: a diverging network
must show NaN or inf as the torch path does.
"""

from __future__ import annotations

import numba
import numpy as np

from featmlp.progress import announce_compiles

announce_compiles()  # a line while a kernel below compiles (once per install: cache=True)

# Sample-axis block: (F + hidden + C) rows of BLOCK float32 values (x 2 for the gradients)
# stay in the 32 KB L1 for the lecture's shapes.
BLOCK = 256

_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_LOW = np.float32(-87.0)  # 2**n stays a normal float32 above this


# Tiles of up to 4 rows per pass over a block: one load and store of the output row per 4
# multiply-adds instead of per one. A pass over 256 samples is store-bound (~11 ns measured
# for one multiply-add per element); forward and backward took ~2/3 of the kernel's time with
# one row per pass.

@numba.njit(cache=True, inline="always", fastmath=_FASTMATH)
def _rows4(out, ro, src, r0, r1, r2, r3, w0, w1, w2, w3, init, nb):
    """out[ro] = (init or out[ro]) + w0 src[r0] + ... + w3 src[r3], over the block."""
    if init:
        for b in range(nb):
            out[ro, b] = w0 * src[r0, b] + w1 * src[r1, b] + w2 * src[r2, b] + w3 * src[r3, b]
    else:
        for b in range(nb):
            out[ro, b] += w0 * src[r0, b] + w1 * src[r1, b] + w2 * src[r2, b] + w3 * src[r3, b]


@numba.njit(cache=True, inline="always", fastmath=_FASTMATH)
def _dot4(g, ro, src, r0, r1, r2, r3, nb):
    """sum_b g[ro, b] * src[rj, b] for the four rows rj (float32 block sums)."""
    s0 = np.float32(0.0)
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    s3 = np.float32(0.0)
    for b in range(nb):
        v = g[ro, b]
        s0 += v * src[r0, b]
        s1 += v * src[r1, b]
        s2 += v * src[r2, b]
        s3 += v * src[r3, b]
    return s0, s1, s2, s3


def _epoch_py(XT, y, gw, lw, params, shapes, offsets, mse, n_chunks, grad, stats):
    """Gradient sums and loss statistics of one epoch over all samples, per chunk.

    XT (F, N) float32; y (N,) int64; gw (N,) gradient weight per sample, lw (N,) loss weight;
    params (K, P) float32; shapes (L, 2) layer (out, in); offsets (L,) parameter offset of each
    layer's weights (its bias follows). Writes grad (n_chunks, K, P) float64 (sum over the
    chunk's samples of gw * d loss / d params, MSE without its 2 / C factor) and stats
    (n_chunks, K, 2) float64: sum of lw * loss (MSE: sum_c (p_c - y_c)^2, without 1 / C) and the
    number of samples whose true-class logit is the largest.
    """
    F, N = XT.shape
    K = params.shape[0]
    L = shapes.shape[0]
    C = shapes[L - 1, 0]
    B = BLOCK
    rows = F
    for l in range(L):
        rows += shapes[l, 0]
    per = (N + n_chunks - 1) // n_chunks
    for t in numba.prange(n_chunks):
        # Rows of B samples; 2-D buffers indexed [row, b] rather than slices: a slice is an
        # array object whose reference count numba updates (atomically) on every use.
        a = np.empty((rows, B), np.float32)  # activations: x, hidden outputs, logits
        d = np.empty((rows, B), np.float32)  # gradients w.r.t. the same rows (x's unused)
        bits = np.empty((C, B), np.int32)  # 2**n of the exponentials, as float32 bit patterns
        scale = bits.view(np.float32)
        m = np.empty(B, np.float32)
        zy = np.empty(B, np.float32)
        ssum = np.empty(B, np.float32)
        S = np.empty(B, np.float32)
        py = np.empty(B, np.float32)
        gwb = np.empty(B, np.float32)
        lwb = np.empty(B, np.float32)
        yb = np.empty(B, np.int64)
        for k in range(K):
            for j in range(params.shape[1]):
                grad[t, k, j] = 0.0
            stats[t, k, 0] = 0.0
            stats[t, k, 1] = 0.0
        stop = min(N, (t + 1) * per)
        for s in range(t * per, stop, B):
            nb = min(B, stop - s)
            for f in range(F):
                xs = XT[f, s : s + nb]
                for b in range(nb):
                    a[f, b] = xs[b]
            ys = y[s : s + nb]
            gws = gw[s : s + nb]
            lws = lw[s : s + nb]
            for b in range(nb):
                yb[b] = ys[b]
                gwb[b] = gws[b]
                lwb[b] = lws[b]
            for k in range(K):
                # ---- forward: out rows = bias + W @ in rows, ReLU on hidden layers ----
                row_in = 0
                row_out = F
                for l in range(L):
                    n_out, n_in = shapes[l, 0], shapes[l, 1]
                    po = offsets[l]
                    for o in range(n_out):
                        ro = row_out + o
                        pw = po + o * n_in
                        bias = params[k, po + n_out * n_in + o]
                        for i in range(0, n_in, 4):
                            # a tile of 4 inputs; past n_in, weight 0 on row ri (any row)
                            r = row_in + i
                            w0 = params[k, pw + i]
                            w1 = params[k, pw + i + 1] if i + 1 < n_in else np.float32(0.0)
                            w2 = params[k, pw + i + 2] if i + 2 < n_in else np.float32(0.0)
                            w3 = params[k, pw + i + 3] if i + 3 < n_in else np.float32(0.0)
                            r1 = r + 1 if i + 1 < n_in else r
                            r2 = r + 2 if i + 2 < n_in else r
                            r3 = r + 3 if i + 3 < n_in else r
                            if i == 0:
                                for b in range(nb):
                                    a[ro, b] = bias + (w0 * a[r, b] + w1 * a[r1, b]
                                                       + w2 * a[r2, b] + w3 * a[r3, b])
                            else:
                                _rows4(a, ro, a, r, r1, r2, r3, w0, w1, w2, w3, False, nb)
                        if l < L - 1:
                            for b in range(nb):
                                v = a[ro, b]
                                a[ro, b] = np.float32(0.0) if v < 0 else v  # NaN stays NaN
                    row_in = row_out
                    row_out += n_out
                # ---- head: softmax over the C logit rows of each sample ----
                zr = row_in  # first logit row
                for b in range(nb):
                    m[b] = a[zr, b]
                    zy[b] = np.float32(0.0)
                    ssum[b] = np.float32(0.0)
                    S[b] = np.float32(0.0)
                    py[b] = np.float32(0.0)
                for c in range(C):
                    rc = zr + c
                    for b in range(nb):
                        v = a[rc, b]
                        m[b] = v if v > m[b] else m[b]
                        zy[b] += v if yb[b] == c else np.float32(0.0)
                # exp(z - max): range reduction to r in [-ln2/2, ln2/2], Cephes' expf
                # polynomial, times 2**n built from its bits (libm's exp does not vectorise).
                for c in range(C):
                    rc = zr + c
                    for b in range(nb):
                        x = a[rc, b] - m[b]
                        x = _EXP_LOW if x < _EXP_LOW else x  # NaN stays NaN
                        n = np.floor(x * _LOG2E + np.float32(0.5))
                        r = x - n * _LN2_HI
                        r = r - n * _LN2_LO
                        p = np.float32(1.9875691500e-4)
                        p = p * r + np.float32(1.3981999507e-3)
                        p = p * r + np.float32(8.3334519073e-3)
                        p = p * r + np.float32(4.1665795894e-2)
                        p = p * r + np.float32(1.6666665459e-1)
                        p = p * r + np.float32(5.0000001201e-1)
                        d[rc, b] = p * r * r + r + np.float32(1.0)
                        bits[c, b] = (np.int32(n) + np.int32(127)) << np.int32(23)
                for c in range(C):
                    rc = zr + c
                    for b in range(nb):
                        v = d[rc, b] * scale[c, b]
                        d[rc, b] = v
                        ssum[b] += v
                for b in range(nb):
                    ssum[b] = np.float32(1.0) / ssum[b]
                for c in range(C):
                    rc = zr + c
                    for b in range(nb):
                        p = d[rc, b] * ssum[b]
                        d[rc, b] = p
                        S[b] += p * p
                        py[b] += p if yb[b] == c else np.float32(0.0)
                loss = 0.0
                correct = 0.0
                if mse:
                    # sum_c (p_c - y_c)^2 = S - 2 p_y + 1 (the + 1 and / C come later); through
                    # the softmax, dL/dz = k p (p - y - R) with R = S - p_y: p^2 - p R, minus
                    # p_y at the true class (k = 2 / C applied to the sums later).
                    for b in range(nb):
                        loss += np.float64(lwb[b]) * np.float64(S[b] - py[b] - py[b])
                        S[b] = S[b] - py[b]  # R
                    for c in range(C):
                        rc = zr + c
                        for b in range(nb):
                            p = d[rc, b]
                            g = p * p - p * S[b]
                            g = g - (py[b] if yb[b] == c else np.float32(0.0))
                            d[rc, b] = g * gwb[b]
                else:
                    # log_softmax's loss, max - z_y + log(sum exp(z - max)); ssum holds
                    # 1 / sum here. d loss / dz = p - y.
                    for b in range(nb):
                        loss += np.float64(lwb[b]) * (np.float64(m[b]) - np.float64(zy[b])
                                                      - np.log(np.float64(ssum[b])))
                    for c in range(C):
                        rc = zr + c
                        for b in range(nb):
                            p = d[rc, b] - (np.float32(1.0) if yb[b] == c else np.float32(0.0))
                            d[rc, b] = p * gwb[b]
                for b in range(nb):
                    correct += 1.0 if zy[b] >= m[b] else 0.0
                stats[t, k, 0] += loss
                stats[t, k, 1] += correct
                # ---- backward, last layer first ----
                row_out = zr
                for l in range(L - 1, -1, -1):
                    n_out, n_in = shapes[l, 0], shapes[l, 1]
                    po = offsets[l]
                    row_in = row_out - n_in
                    for o in range(n_out):
                        ro = row_out + o
                        pw = po + o * n_in
                        acc = np.float32(0.0)
                        for b in range(nb):
                            acc += d[ro, b]
                        grad[t, k, po + n_out * n_in + o] += acc
                        for i in range(0, n_in, 4):
                            r = row_in + i
                            r1 = r + 1 if i + 1 < n_in else r
                            r2 = r + 2 if i + 2 < n_in else r
                            r3 = r + 3 if i + 3 < n_in else r
                            s0, s1, s2, s3 = _dot4(d, ro, a, r, r1, r2, r3, nb)
                            grad[t, k, pw + i] += s0
                            if i + 1 < n_in:
                                grad[t, k, pw + i + 1] += s1
                            if i + 2 < n_in:
                                grad[t, k, pw + i + 2] += s2
                            if i + 3 < n_in:
                                grad[t, k, pw + i + 3] += s3
                    if l > 0:
                        # gradient w.r.t. the layer's input rows, through the ReLU
                        for i in range(n_in):
                            ri = row_in + i
                            for o in range(0, n_out, 4):
                                r = row_out + o
                                w0 = params[k, po + o * n_in + i]
                                w1 = params[k, po + (o + 1) * n_in + i] if o + 1 < n_out \
                                    else np.float32(0.0)
                                w2 = params[k, po + (o + 2) * n_in + i] if o + 2 < n_out \
                                    else np.float32(0.0)
                                w3 = params[k, po + (o + 3) * n_in + i] if o + 3 < n_out \
                                    else np.float32(0.0)
                                r1 = r + 1 if o + 1 < n_out else r
                                r2 = r + 2 if o + 2 < n_out else r
                                r3 = r + 3 if o + 3 < n_out else r
                                _rows4(d, ri, d, r, r1, r2, r3, w0, w1, w2, w3, o == 0, nb)
                            for b in range(nb):
                                d[ri, b] = d[ri, b] if a[ri, b] > 0 else np.float32(0.0)
                    row_out = row_in


epoch = numba.njit(cache=True, parallel=True, fastmath=_FASTMATH)(_epoch_py)


def compile_for(*args) -> None:
    """Compile :func:`epoch` for these arguments (or load it from numba's on-disk cache) without
    running it, so that the time of the first epoch is the epoch's alone."""
    epoch.compile(tuple(numba.typeof(a) for a in args))


def n_chunks(n: int) -> int:
    """Chunks of samples for ``n`` samples: one per numba thread, at least a block each."""
    return max(1, min(numba.get_num_threads(), -(-n // BLOCK)))

"""CBD core: composition, GF(2) decomposition, scale search, bit accounting."""

import math

import numpy as np
import pytest

from melius_larq.cbd import (
    decompose_kernel,
    decompose_matrix,
    find_scale,
    gf2_factor,
    gf2_matmul,
    gf2_rank,
    greedy_planes,
    grid,
    integer_exact,
    layer_integer_exactness,
    matricize,
    pack_rows,
    quantize,
    two_conv_kernels,
    unmatricize,
    unpack_rows,
)

EPS32 = float(np.finfo(np.float32).eps)
# W_hat = float32(S k) * float32(m Delta): the step is rounded once (relative eps/2, times
# k Delta <= 1 + Delta/2 in units of m) and the product once more (|W_hat| <= m (1 + Delta/2)),
# so W_hat is within about 2 * eps/2 * 1.5 * m of m Delta k; 2 eps * m is a safe cap.
RECONSTRUCTION_SLACK = 2 * EPS32
# Entries within this relative distance of a rounding threshold count as ties: there the
# greedy float arithmetic and an exact rounding may legitimately differ. float64 residuals
# carry errors of a few 1e-16.
TIE_RTOL = 1e-12


def gf2_rank_unpacked(matrix):
    """Independent GF(2) rank: plain column-by-column elimination on an unpacked 0/1 array."""
    a = (np.asarray(matrix) % 2).astype(np.int64)
    rows, cols = a.shape
    rank = 0
    for col in range(cols):
        pivot = next((r for r in range(rank, rows) if a[r, col]), None)
        if pivot is None:
            continue
        a[[rank, pivot]] = a[[pivot, rank]]
        for r in range(rows):
            if r != rank and a[r, col]:
                a[r] = (a[r] + a[rank]) % 2
        rank += 1
        if rank == rows:
            break
    return rank


def toy_matrix():
    w = np.full((8, 8), 0.05, dtype=np.float32)
    w[0:2, 0:4] = 1.0
    w[1, 2] = -1.0
    return w


def structured_kernel(rng, shape=(3, 3, 32, 48)):
    """Laplacian weights with log-normal per-filter and per-input-channel scales (trained-like tails)."""
    kh, kw, cin, cout = shape
    scales = rng.lognormal(sigma=0.7, size=(1, 1, cin, 1)) * rng.lognormal(sigma=0.7, size=cout)
    return (rng.laplace(size=shape) * scales).astype(np.float32)


class TestWorkedExample:
    """The worked example of docs/cbd.md: the 8x8 toy matrix with J=4, a=0.5."""

    def test_grid(self):
        g = grid(0.5, 4)
        assert (g["a_s"], g["a_i"]) == (1, -2)
        assert g["c"] == pytest.approx(4 / 7, rel=1e-15)
        assert g["D"] == pytest.approx(1 / 14, rel=1e-15)

    def test_planes_bits_and_error(self):
        w = toy_matrix()
        layer = decompose_matrix(w, 4, a=0.5)
        ranks = layer.ranks()
        assert ranks == {1: 0, 0: 1}
        for i in (0, -1, -2):
            plane = layer.plane(i)
            assert int(plane.sum()) == 8
            assert gf2_rank_unpacked(plane) == 1
        assert not layer.plane(1).any()
        assert layer.payload_bits() == 64 * 3 + 1 * 16
        assert layer.bits_per_weight() == 3.25
        expected = np.zeros((8, 8), dtype=np.float32)
        expected[0:2, 0:4] = 1.0
        expected[1, 2] = -1.0
        np.testing.assert_array_equal(layer.matrix(), expected)
        assert layer.error["max"] == pytest.approx(0.05, abs=EPS32)
        assert layer.error["max"] <= layer.bound == pytest.approx(1 / 14)


class TestComposition:
    @pytest.mark.parametrize("bits", range(1, 9))
    def test_greedy_extraction_is_round_to_nearest(self, bits):
        rng = np.random.default_rng(bits)
        r = rng.random((96, 80)) ** 3
        r /= r.max()
        for a in (1.0, 0.5, 0.37, float(rng.uniform(2.0**-bits, 1)), find_scale(r, 0.1)):
            if a <= 2.0**-bits:
                continue
            g = grid(a, bits)
            codes = quantize(r, a, bits).astype(np.int64)
            greedy = sum(
                plane.astype(np.int64) << (i - g["a_i"])
                for i, plane in greedy_planes(r, a, bits).items()
            )
            x = r / g["delta"]
            nearest = np.minimum(2**bits - 1, np.floor(x + 0.5)).astype(np.int64)
            tie = np.abs(x - np.round(x - 0.5) - 0.5) <= TIE_RTOL * np.maximum(x, 1)
            assert np.array_equal(codes[~tie], nearest[~tie])
            assert np.array_equal(greedy[~tie], codes[~tie])
            # at ties the CBD rule (strict >) rounds down, one code below floor(x + 1/2)
            assert np.all((nearest - codes)[tie] <= 1)
            assert tie.mean() < 1e-3

    @pytest.mark.parametrize("bits", range(1, 9))
    @pytest.mark.parametrize("dist", ["normal", "laplace", "structured"])
    def test_error_bound(self, bits, dist):
        rng = np.random.default_rng(100 + bits)
        if dist == "structured":
            kernel = structured_kernel(rng, (3, 3, 16, 24))
        else:
            kernel = getattr(rng, dist)(size=(3, 3, 16, 24)).astype(np.float32)
        layer = decompose_kernel(kernel, bits, bottleneck=0.2)
        diff = np.abs(kernel.astype(np.float64) - layer.kernel().astype(np.float64))
        assert diff.max() <= layer.bound + RECONSTRUCTION_SLACK * layer.m
        assert diff.max() == pytest.approx(layer.error["max"])

    @pytest.mark.parametrize("bits", range(1, 9))
    def test_top_code_never_saturates(self, bits):
        for a in np.linspace(2.0**-bits, 1, 257)[1:]:
            g = grid(float(a), bits)
            assert g["a_s"] == math.floor(math.log2(1 / a) + 1e-12)
            assert g["delta"] * (2**bits - 1) >= 1 - g["delta"] / 2

    def test_plane_support_is_r_above_a(self):
        rng = np.random.default_rng(7)
        for bits, bottleneck in ((4, 0.05), (6, 0.1), (7, 0.3), (8, 0.5)):
            kernel = structured_kernel(rng)
            layer = decompose_kernel(kernel, bits, bottleneck=bottleneck)
            r = np.abs(matricize(kernel).astype(np.float64)) / layer.m
            union = np.zeros(layer.shape, dtype=bool)
            for p in layer.planes:
                if p.exponent >= 0:
                    union |= layer.plane(p.exponent).astype(bool)
            np.testing.assert_array_equal(union, r > layer.a)

    def test_find_scale_meets_the_rank_budget(self):
        rng = np.random.default_rng(3)
        for h, w, bottleneck in ((40, 60, 0.1), (64, 64, 0.25), (96, 48, 0.5), (30, 90, 0.05)):
            r = rng.random((h, w))  # continuous: no ties
            r /= r.max()
            bound = math.floor(bottleneck * min(h, w))
            a = find_scale(r, bottleneck)
            rank = gf2_rank_unpacked(r > a)
            s = np.sort(r, axis=None)[::-1]
            early_exit = a == s[min(math.floor(bottleneck * h * w), s.size - 1)]
            assert rank <= bound
            if not early_exit:
                assert rank == bound
                larger = s[np.flatnonzero(s == a)[0] + 1]  # one more entry in the support
                assert gf2_rank_unpacked(r > larger) > bound


class TestGF2:
    def test_true_rank_where_the_reference_overcounts(self):
        assert gf2_rank(np.array([[0, 1], [0, 1]])) == 1
        rank, left, right = gf2_factor(np.array([[0, 1], [0, 1]]))
        assert rank == 1 and left.shape == (2, 1) and right.shape == (1, 2)

    @pytest.mark.parametrize("seed", range(6))
    def test_factor_is_exact_at_the_independent_rank(self, seed):
        rng = np.random.default_rng(seed)
        h, w = rng.integers(1, 140, size=2)
        kind = seed % 3
        if kind == 0:
            b = (rng.random((h, w)) < 0.05).astype(np.uint8)
        elif kind == 1:
            k = int(rng.integers(1, 6))
            b = ((rng.random((h, k)) < 0.5).astype(int) @ (rng.random((k, w)) < 0.5)) % 2
        else:
            b = (rng.random((h, w)) < 0.5).astype(np.uint8)
        rank, left, right = gf2_factor(b)
        assert rank == gf2_rank_unpacked(b) == gf2_rank(b)
        assert left.shape == (h, rank) and right.shape == (rank, w)
        np.testing.assert_array_equal((left.astype(np.int64) @ right) % 2, b)
        np.testing.assert_array_equal(gf2_matmul(left, right), b)

    def test_rank_limit_caps_the_count(self):
        b = np.eye(50, dtype=np.uint8)
        assert gf2_rank(b, limit=7) == 7
        assert gf2_rank(b) == 50

    @pytest.mark.parametrize("width", [1, 63, 64, 65, 130])
    def test_pack_round_trip(self, width):
        b = (np.random.default_rng(width).random((5, width)) < 0.5).astype(np.uint8)
        packed = pack_rows(b)
        assert packed.dtype == np.uint64 and packed.shape == (5, -(-width // 64))
        np.testing.assert_array_equal(unpack_rows(packed, width), b)

    def test_every_decomposed_plane_is_lossless(self):
        layer = decompose_kernel(structured_kernel(np.random.default_rng(5)), 6, bottleneck=0.1)
        assert layer.factored
        for p in layer.planes:
            if p.factored:
                left, right = p.factors
                plane = layer.plane(p.exponent)
                np.testing.assert_array_equal((left.astype(np.int64) @ right) % 2, plane)
                assert p.rank == gf2_rank_unpacked(plane)


class TestAccounting:
    def test_factored_layer_bits(self):
        kernel = structured_kernel(np.random.default_rng(11))
        layer = decompose_kernel(kernel, 6, bottleneck=0.1)
        h, w = layer.shape
        g = layer.grid
        factor_bits = sum(r * (h + w) for r in layer.ranks().values())
        assert layer.factored and factor_bits <= h * w
        dense_low = -g["a_i"]
        assert dense_low == 6 - g["a_s"] - 1
        assert layer.payload_bits() == h * w * (1 + dense_low) + factor_bits

    def test_layer_fallback_keeps_the_codes_and_counts_j_plus_one(self):
        # i.i.d. uniform weights at a generous budget: the high planes are nearly full rank.
        rng = np.random.default_rng(12)
        matrix = rng.uniform(-1, 1, size=(64, 64)).astype(np.float32)
        layer = decompose_matrix(matrix, 5, bottleneck=1.0)
        h, w = layer.shape
        assert sum(r * (h + w) for r in layer.ranks().values()) > h * w
        assert not layer.factored
        assert layer.payload_bits() == h * w * (5 + 1)
        # The weights are the J-plane codes (the reference re-quantises with J+1 planes here).
        np.testing.assert_array_equal(layer.codes, quantize(np.abs(matrix) / layer.m, layer.a, 5))
        assert layer.error["max"] <= layer.bound + RECONSTRUCTION_SLACK * layer.m

    def test_plane_fallback_never_costs_more(self):
        rng = np.random.default_rng(13)
        for bottleneck in (0.05, 0.2, 0.5, 1.0):
            kernel = structured_kernel(rng, (3, 3, 24, 24))
            per_layer = decompose_kernel(kernel, 6, bottleneck=bottleneck, fallback="layer")
            per_plane = decompose_kernel(kernel, 6, bottleneck=bottleneck, fallback="plane")
            assert per_plane.payload_bits() <= per_layer.payload_bits()
            assert per_plane.payload_bits() <= per_plane.size * 7
            np.testing.assert_array_equal(per_plane.kernel(), per_layer.kernel())


class TestLayout:
    def test_conv_matricization_indices(self):
        kernel = np.random.default_rng(0).standard_normal((3, 5, 4, 6))
        matrix = matricize(kernel)
        assert matrix.shape == (6 * 3, 4 * 5)
        for y, x, i, o in [(0, 0, 0, 0), (2, 4, 3, 5), (1, 3, 2, 1)]:
            assert matrix[o * 3 + y, i * 5 + x] == kernel[y, x, i, o]
        np.testing.assert_array_equal(unmatricize(matrix, kernel.shape), kernel)

    def test_dense_matricization_is_the_transpose(self):
        kernel = np.arange(12.0).reshape(3, 4)
        np.testing.assert_array_equal(matricize(kernel), kernel.T)
        np.testing.assert_array_equal(unmatricize(matricize(kernel), kernel.shape), kernel)


class TestBadInput:
    @pytest.mark.parametrize("bits", [0, 9, -1, 2.5, True, "6"])
    def test_bits(self, bits):
        with pytest.raises(ValueError, match=r"`bits`.*1\.\.8.*but got"):
            decompose_matrix(np.ones((4, 4)), bits, bottleneck=0.5)

    @pytest.mark.parametrize("bottleneck", [0, -0.1, 1.5, float("nan"), float("inf")])
    def test_bottleneck(self, bottleneck):
        with pytest.raises(ValueError, match=r"`bottleneck`.*\(0, 1\].*but got"):
            decompose_matrix(np.random.default_rng(0).random((4, 4)), 4, bottleneck=bottleneck)

    def test_non_finite_weights_name_the_layer(self):
        matrix = np.ones((4, 4), dtype=np.float32)
        matrix[1, 2] = np.nan
        with pytest.raises(ValueError, match="'block/conv'.*non-finite"):
            decompose_matrix(matrix, 4, bottleneck=0.5, name="block/conv")

    def test_scale_out_of_range(self):
        with pytest.raises(ValueError, match="scale `a`"):
            decompose_matrix(np.ones((4, 4)), 4, a=2.0**-4)


class TestIntegerExactness:
    def test_gf2_factors_need_not_be_integer_exact(self):
        plane = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]], dtype=np.uint8)  # row3 = row1^row2
        rank, left, right = gf2_factor(plane)
        assert rank == 2
        np.testing.assert_array_equal(gf2_matmul(left, right), plane)
        assert (left.astype(int) @ right).max() == 2
        assert not integer_exact(left, right, plane)

    def test_worked_example_passes(self):
        layer = decompose_matrix(toy_matrix(), 4, a=0.5)
        result = layer_integer_exactness(layer)
        assert result["unsigned"] and result["signed"]
        assert result["planes"][0]["positive"]["rank"] == 2
        assert result["planes"][0]["negative"]["rank"] == 1

    @pytest.mark.parametrize(
        "strides,padding", [((1, 1), "same"), ((2, 2), "same"), ((2, 2), "valid")]
    )
    def test_two_convolutions_equal_the_plane_convolution(self, strides, padding):
        from melius_larq._compat import tf

        rng = np.random.default_rng(1)
        kh, kw, cin, cout, rank = 3, 3, 4, 5, 2
        # Integer-exact by construction: disjoint blocks (each matrix entry in one block).
        left = np.zeros((cout * kh, rank), dtype=np.uint8)
        right = np.zeros((rank, cin * kw), dtype=np.uint8)
        left[:7, 0] = 1
        left[7:12, 1] = 1
        right[0, rng.permutation(cin * kw)[:5]] = 1
        right[1, :] = 1
        plane = gf2_matmul(left, right)
        assert integer_exact(left, right, plane)
        kernel = unmatricize(plane, (kh, kw, cin, cout)).astype(np.float32)
        first, second = two_conv_kernels(left, right, (kh, kw, cin, cout))
        x = tf.constant(rng.standard_normal((2, 11, 9, cin)).astype(np.float32))
        direct = tf.nn.conv2d(x, kernel, strides=strides, padding=padding.upper())
        y = tf.nn.conv2d(x, first, strides=(1, strides[1]), padding=padding.upper())
        pair = tf.nn.conv2d(y, second, strides=(strides[0], 1), padding=padding.upper())
        # float32 sums of at most kh*kw*cin = 36 products of O(1) terms, two orders
        np.testing.assert_allclose(pair.numpy(), direct.numpy(), rtol=0, atol=1e-4)

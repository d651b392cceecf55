"""EgoNCE against a direct loop-based implementation of DESIGN.md B.4."""

from __future__ import annotations

import math

import pytest
import torch

from egovlp.losses import egonce


def loop_egonce(text, video, verb, noun, temperature, use_verb=True, use_noun=True):
    n = text.shape[0]

    def cos(a, b):
        na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
        return sum(x * y for x, y in zip(a, b, strict=True)) / max(na * nb, 1e-8) if na and nb else 0.0

    t, v = text.tolist(), video.tolist()
    x = [[cos(t[i], v[j]) / temperature for j in range(n)] for i in range(n)]
    pos = [[False] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            s = 1.0
            if use_verb:
                s *= cos(verb[i].tolist(), verb[j].tolist())
            if use_noun:
                s *= cos(noun[i].tolist(), noun[j].tolist())
            if not (use_verb or use_noun):
                s = 0.0
            pos[i][j] = s + (1.0 if i == j else 0.0) > 0

    def term(rows):
        total = 0.0
        for i in range(n):
            m = max(rows[i])
            denom = sum(math.exp(val - m) for val in rows[i])
            num = sum(math.exp(rows[i][j] - m) for j in range(n) if posm(i, j, rows is x))
            total += -math.log(num / denom)
        return total / n

    def posm(i, j, row_is_text):
        return pos[i][j] if row_is_text else pos[j][i]

    cols = [[x[i][j] for i in range(n)] for j in range(n)]
    return term(x) + term(cols)


def random_tags(n, size, gen, empty_rows=()):
    tags = (torch.rand(n, size, generator=gen) < 0.3).float()
    for r in empty_rows:
        tags[r] = 0
    return tags


@pytest.mark.parametrize("n", [1, 2, 5, 9])
@pytest.mark.parametrize("flags", [(True, True), (True, False), (False, False)])
def test_egonce_matches_loop(n, flags):
    gen = torch.Generator().manual_seed(n)
    text, video = torch.randn(n, 8, generator=gen), torch.randn(n, 8, generator=gen)
    verb = random_tags(n, 4, gen, empty_rows=[0])
    noun = random_tags(n, 6, gen, empty_rows=[n - 1])
    got = egonce(text, video, verb, noun, 0.05, verb=flags[0], noun=flags[1])
    want = loop_egonce(text, video, verb, noun, 0.05, *flags)
    assert got.item() == pytest.approx(want, rel=1e-4, abs=1e-4)


def test_infonce_case_is_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    text, video = torch.randn(6, 8, generator=gen), torch.randn(6, 8, generator=gen)
    logits = (
        torch.nn.functional.normalize(text, dim=-1) @ torch.nn.functional.normalize(video, dim=-1).T / 0.05
    )
    labels = torch.arange(6)
    ce = torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(
        logits.T, labels
    )
    got = egonce(text, video, torch.ones(6, 3), torch.ones(6, 3), verb=False, noun=False)
    torch.testing.assert_close(got, ce)


def test_shared_tags_make_positives_and_lower_the_loss():
    gen = torch.Generator().manual_seed(1)
    text, video = torch.randn(4, 8, generator=gen), torch.randn(4, 8, generator=gen)
    same = torch.ones(4, 1)
    assert egonce(text, video, same, same) < egonce(text, video, same, same, verb=False, noun=False)


def test_stable_for_large_logits_and_has_gradients():
    text = torch.randn(8, 16, requires_grad=True)
    video = (text.detach() * 1000).requires_grad_()
    loss = egonce(text, video, torch.eye(8), torch.eye(8), temperature=1e-4)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(text.grad).all() and torch.isfinite(video.grad).all()


def reference_egonce_float64(text, video, verb, noun, temperature):
    """DESIGN.md B.4 in double precision with math.fsum, written from the formula (no torch ops)."""
    t, v, vb, nn = text.tolist(), video.tolist(), verb.tolist(), noun.tolist()
    n = len(t)

    def cos(a, b):
        na, nb = math.sqrt(math.fsum(x * x for x in a)), math.sqrt(math.fsum(x * x for x in b))
        return math.fsum(x * y for x, y in zip(a, b, strict=True)) / max(na * nb, 1e-8)

    x = [[cos(t[i], v[j]) / temperature for j in range(n)] for i in range(n)]
    pos = [[cos(vb[i], vb[j]) * cos(nn[i], nn[j]) + (i == j) > 0 for j in range(n)] for i in range(n)]

    def log_pos_softmax(values, positive):
        m = max(values)
        total = math.fsum(math.exp(val - m) for val in values)
        hit = math.fsum(math.exp(val - m) for val, p in zip(values, positive, strict=True) if p)
        return math.log(hit) - math.log(total)

    rows = math.fsum(log_pos_softmax(x[i], pos[i]) for i in range(n)) / n
    cols = (
        math.fsum(
            log_pos_softmax([x[i][j] for i in range(n)], [pos[i][j] for i in range(n)]) for j in range(n)
        )
        / n
    )
    return -rows - cols


def test_float64_inputs_stay_float64():
    gen = torch.Generator().manual_seed(7)
    n = 24
    text = torch.randn(n, 32, generator=gen, dtype=torch.float64)
    video = 0.3 * text + torch.randn(n, 32, generator=gen, dtype=torch.float64)  # loss of order 1
    verb, noun = random_tags(n, 5, gen), random_tags(n, 7, gen)
    want = reference_egonce_float64(text, video, verb, noun, 0.05)
    got = egonce(text, video, verb, noun, 0.05)
    assert got.dtype == torch.float64
    assert abs(got.item() - want) <= 1e-12 * abs(want)
    # the same inputs through float32 miss that tolerance, so the check above can fail
    single = egonce(text.float(), video.float(), verb, noun, 0.05)
    assert single.dtype == torch.float32
    assert abs(single.item() - want) > 1e-12 * abs(want)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_is_upcast_to_float32(half):
    gen = torch.Generator().manual_seed(3)
    text, video = torch.randn(6, 16, generator=gen), torch.randn(6, 16, generator=gen)
    verb, noun = random_tags(6, 3, gen), random_tags(6, 4, gen)
    got = egonce(text.to(half), video.to(half), verb, noun, 0.05)
    assert got.dtype == torch.float32
    # computed from the rounded half inputs, in float32: the float64 reference of those inputs
    want = reference_egonce_float64(text.to(half).double(), video.to(half).double(), verb, noun, 0.05)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_mixed_dtypes_promote():
    text = torch.randn(4, 8, dtype=torch.float64)
    video = torch.randn(4, 8, dtype=torch.float32)
    assert egonce(text, video, torch.eye(4), torch.eye(4)).dtype == torch.float64
    assert egonce(text.half(), video, torch.eye(4), torch.eye(4)).dtype == torch.float32

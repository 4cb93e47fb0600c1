"""Golden tests of the verification scores: hand-computed tables, and pysteps (the field's reference).

pysteps' ``det_cat_fct`` thresholds with ``>``, so it is called with the next float below the
threshold to give ``>=``; its ``fss`` uses ``>=`` and ``uniform_filter`` with zero padding, as ours.
"""

import json

import numpy as np
import pytest
from pysteps.verification import det_cat_fct, det_cat_fct_accum, det_cat_fct_compute, det_cat_fct_init
from pysteps.verification.spatialscores import fss, fss_accum, fss_compute, fss_init

import predrnn.verification as verification
from predrnn.verification import (
    DEFAULT_FSS_SCALES,
    DEFAULT_POOLS,
    ScoreAccumulator,
    default_thresholds,
    threshold_label,
    verification_scores,
)

nan = np.nan


def clip(*frames: list[list[float]], dtype=np.float64) -> np.ndarray:
    """One clip (1, N, H, W, 1) from N frames given as nested lists."""
    return np.asarray(frames, dtype=dtype)[None, ..., None]


# Lead 0 at threshold 2: truth events (0,2)=2 and (1,2)=2 sit exactly on the threshold.
#   hits (0,2) (1,2) (1,3); false alarms (0,1) (2,3); miss (0,3); 10 correct negatives.
# Lead 1: nothing reaches 2 anywhere.
T0 = [[0, 1, 2, 3], [0, 0, 2, 5], [0, 0, 0, 1], [0, 0, 0, 0]]
F0 = [[0, 2, 2, 1], [0, 0, 3, 5], [1.9, 0, 0, 2], [0, 0, 0, 0]]
T1 = [[0] * 4] * 4
F1 = [[1] * 4] * 4


def golden():
    return verification_scores(clip(F0, F1), clip(T0, T1), [2.0, 0.0], pools=(), fss_scales=())


def test_contingency_golden_table():
    s = golden()
    assert s["counts"]["2"] == {"hits": [3, 0], "false_alarms": [2, 0], "misses": [1, 0],
                                "correct_negatives": [10, 16]}
    assert s["csi"]["2"][0] == pytest.approx(3 / 6)
    assert s["pod"]["2"][0] == pytest.approx(3 / 4)  # a/(a+c)
    assert s["far"]["2"][0] == pytest.approx(2 / 5)  # b/(a+b): not 1 - POD (0.25)
    assert s["bias"]["2"][0] == pytest.approx(5 / 4)
    assert s["hss"]["2"][0] == pytest.approx(2 * (3 * 10 - 2 * 1) / ((3 + 1) * (1 + 10) + (3 + 2) * (2 + 10)))


def test_value_equal_to_threshold_is_an_event():
    s = golden()
    # with ">" the table would be a=2, b=0, c=0 (only 3 and 5 exceed 2 in the truth, 3 and 5 in the forecast)
    assert s["counts"]["2"]["hits"][0] == 3 and s["counts"]["2"]["misses"][0] == 1
    f32 = verification_scores(clip([[0.7]], dtype=np.float32), clip([[0.7]], dtype=np.float32), [0.7],
                              pools=(), fss_scales=())
    # float32(0.7) < 0.7 in float64; the threshold is taken at the data's precision, so this is a hit
    assert f32["counts"]["0.7"]["hits"] == [1]
    vil = verification_scores(np.full((1, 1, 2, 2, 1), 16, np.uint8), np.full((1, 1, 2, 2, 1), 16, np.uint8),
                              default_thresholds("VIL"), pools=(), fss_scales=())
    assert vil["counts"]["16"]["hits"] == [4] and vil["counts"]["74"]["correct_negatives"] == [4]


def test_zero_denominators_are_none():
    s = golden()
    for k in ("csi", "pod", "far", "bias", "hss"):
        assert s[k]["2"][1] is None  # no event forecast or observed: 0/0 everywhere
    # everything an event: CSI, POD, bias 1 and FAR 0, but HSS's denominator (a+c)(c+d)+(a+b)(b+d) is 0
    assert [s[k]["0"][1] for k in ("csi", "pod", "far", "bias", "hss")] == [1.0, 1.0, 0.0, 1.0, None]
    # observed but never forecast: POD 0, CSI 0, bias 0, FAR 0/0
    miss = verification_scores(clip([[0, 0]]), clip([[3, 0]]), [1], pools=(), fss_scales=())
    assert [miss[k]["1"][0] for k in ("csi", "pod", "far", "bias")] == [0.0, 0.0, None, 0.0]
    assert json.loads(json.dumps(s))["csi"]["2"][1] is None  # JSON null


def test_csi_m_skips_none():
    s = golden()
    assert s["csi_m"] == [pytest.approx((0.5 + 1.0) / 2), 1.0]
    only = verification_scores(clip(F0, F1), clip(T0, T1), [2.0], pools=(), fss_scales=())
    assert only["csi_m"] == [0.5, None]


def test_counts_are_summed_over_clips_before_the_ratio():
    truth = np.zeros((2, 1, 2, 2, 1))
    truth[:, 0, 0, 0] = 1
    forecast = truth.copy()
    forecast[1] = 1  # clip 0: a=1 (CSI 1); clip 1: a=1, b=3 (CSI 0.25); mean of CSIs would be 0.625
    s = verification_scores(forecast, truth, [1], pools=(), fss_scales=())
    assert s["csi"]["1"] == [pytest.approx(2 / 5)]
    acc = ScoreAccumulator(1, [1], pools=(), fss_scales=())
    acc.update(forecast[:1], truth[:1])
    acc.update(forecast[1:], truth[1:])
    assert acc.compute() == s


def test_pooled_csi_drops_edge_rows_and_pools_before_thresholding():
    truth = [[0, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [5, 0, 0, 0, 0]]
    fcst = [[0, 0, 1, 0, 9], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    s = verification_scores(clip(fcst), clip(truth), [1], pools=(2,), fss_scales=())
    # 2x2 blocks of the top-left 4x4 (row 4, column 4 dropped): block (0,0) hit (max, not mean: one 1 among
    # 0s), block (0,1) false alarm, two correct negatives -> 1/2. Pixelwise nothing matches: CSI 0.
    assert s["csi_pool"] == {"2": {"1": [0.5]}}
    assert s["csi"]["1"] == [0.0]


def test_pooled_csi_ignores_invalid_pixels_and_blocks():
    truth = [[nan, nan, 0, 0], [nan, nan, 0, nan], [0, 0, 2, 0], [0, 0, 0, 0]]
    fcst = [[5, 5, 0, 0], [5, 5, 0, 9], [0, 0, 2, 0], [0, 0, 0, 0]]
    s = verification_scores(clip(fcst), clip(truth), [1], pools=(2,), fss_scales=())
    # block (0,0) has no valid truth: excluded; in block (0,1) the 9 sits on a NaN truth: ignored
    assert s["csi_pool"]["2"]["1"] == [1.0]
    # pixelwise: the 5 NaN-truth pixels are not counted at all
    assert s["counts"]["1"] == {"hits": [1], "false_alarms": [0], "misses": [0], "correct_negatives": [10]}


def test_nan_forecast_is_a_non_event_and_valid_mask_combines_with_finite_truth():
    truth = clip([[3, 3, nan, 0]])
    fcst = clip([[nan, 3, 3, 3]])
    s = verification_scores(fcst, truth, [1], pools=(1,), fss_scales=())
    assert s["counts"]["1"] == {"hits": [1], "false_alarms": [1], "misses": [1], "correct_negatives": [0]}
    assert s["csi_pool"]["1"]["1"] == s["csi"]["1"]  # 1x1 pooling is the pixelwise score
    valid = np.array([True, False, True, True])[None, None, None, :, None]  # NaN truth stays excluded
    m = verification_scores(fcst, truth, [1], valid=valid, pools=(), fss_scales=())
    assert m["counts"]["1"] == {"hits": [0], "false_alarms": [1], "misses": [1], "correct_negatives": [0]}


def test_fss_by_hand_3x3_zero_padding():
    truth = np.zeros((4, 4))
    fcst = np.zeros((4, 4))
    truth[0, 0] = 1  # a corner: its 3x3 window count is 1 on (0..1, 0..1), the padding contributes 0
    fcst[1, 1] = 1  # window count 1 on (0..2, 0..2)
    s = verification_scores(clip(fcst), clip(truth), [1], pools=(), fss_scales=(1, 3, 9, 27))
    # sum Pf^2 = 9/81, sum Po^2 = 4/81, sum (Pf-Po)^2 = 5/81 -> 1 - 5/13
    assert s["fss"]["1"]["3"] == [pytest.approx(8 / 13)]
    assert s["fss"]["1"]["1"] == [0.0]
    assert s["fss"]["1"]["9"] == [1.0] and s["fss"]["1"]["27"] == [1.0]  # windows wider than the frame
    assert fss(fcst, truth, 1, 3) == pytest.approx(8 / 13)  # pysteps agrees


def test_fss_perfect_disjoint_and_empty():
    rng = np.random.default_rng(3)
    x = rng.gamma(0.5, 4.0, (2, 3, 20, 17, 1))
    perfect = verification_scores(x, x, [1, 4], pools=(), fss_scales=(1, 3, 9))
    assert all(v == 1.0 for per_n in perfect["fss"].values() for lead in per_n.values() for v in lead)
    truth = np.zeros((1, 1, 12, 12, 1))
    fcst = np.zeros_like(truth)
    truth[0, 0, 0, 0] = fcst[0, 0, 10, 10] = 1  # 3x3 windows never overlap
    disjoint = verification_scores(fcst, truth, [1], pools=(), fss_scales=(1, 3))
    assert disjoint["fss"]["1"] == {"1": [0.0], "3": [0.0]}
    empty = verification_scores(fcst * 0, truth * 0, [1], pools=(), fss_scales=(1, 3))
    assert empty["fss"]["1"] == {"1": [None], "3": [None]}


def test_channels_are_independent_fields():
    truth = np.zeros((1, 1, 5, 5, 2))
    fcst = np.zeros_like(truth)
    fcst[0, 0, 2, 2, 0] = 1
    truth[0, 0, 2, 2, 1] = 1  # same pixel, other channel: no window of channel 0 sees it
    s = verification_scores(fcst, truth, [1], pools=(4,), fss_scales=(3,))
    assert s["fss"]["1"]["3"] == [0.0] and s["csi_pool"]["4"]["1"] == [0.0] and s["csi"]["1"] == [0.0]


def test_two_updates_equal_one_on_the_concatenation(monkeypatch):
    rng = np.random.default_rng(4)
    truth = rng.gamma(0.6, 5.0, (5, 3, 19, 23, 2)).astype(np.float32)
    fcst = np.roll(truth, 2, axis=3) * rng.lognormal(0, 0.4, truth.shape).astype(np.float32)
    truth[rng.random(truth.shape) < 0.05] = nan
    fcst[rng.random(truth.shape) < 0.02] = nan
    kw = {"pools": (2, 4, 6), "fss_scales": (1, 3, 5, 27)}
    whole = verification_scores(fcst, truth, [0.5, 2, 5, 10], **kw)
    acc = ScoreAccumulator(3, [0.5, 2, 5, 10], **kw)
    acc.update(fcst[:2], truth[:2])
    acc.update(fcst[2:], truth[2:])
    assert acc.compute() == whole
    monkeypatch.setattr(verification, "_CHUNK_PIXELS", 1)  # one frame per chunk: chunking changes nothing
    assert verification_scores(fcst, truth, [0.5, 2, 5, 10], **kw) == whole


SCORES = ("CSI", "POD", "FAR", "BIAS", "HSS")


def _pysteps_table(p: dict) -> dict:
    return {k.lower(): None if np.isnan(p[k]) else float(p[k]) for k in SCORES}


def _ours(s: dict, label: str, n: int) -> dict:
    return {k: s[k][label][n] for k in ("csi", "pod", "far", "bias", "hss")}


def _approx(d: dict):
    return {k: None if v is None else pytest.approx(v, rel=1e-12, abs=1e-15) for k, v in d.items()}


def below(t: float) -> np.float32:
    """The float32 just under t: pysteps' ``>`` at it is ``>=`` at float32(t)."""
    return np.nextafter(np.float32(t), np.float32(-np.inf))


THRESHOLDS = [0.3, 0.5, 2.0, 5.0, 12.0]


def test_matches_pysteps_single_clip_per_lead_time():
    rng = np.random.default_rng(5)
    truth = rng.gamma(0.5, 4.0, (1, 3, 40, 37, 1)).astype(np.float32)
    fcst = (np.roll(truth, (2, -1), axis=(2, 3)) * rng.lognormal(0, 0.5, truth.shape)).astype(np.float32)
    s = verification_scores(fcst, truth, THRESHOLDS, pools=(), fss_scales=DEFAULT_FSS_SCALES)
    for t in THRESHOLDS:
        label = threshold_label(t)
        for n in range(3):
            f2, o2 = fcst[0, n, ..., 0], truth[0, n, ..., 0]
            assert _ours(s, label, n) == _approx(_pysteps_table(det_cat_fct(f2, o2, below(t), scores=SCORES)))
            for scale in DEFAULT_FSS_SCALES:
                assert s["fss"][label][str(scale)][n] == pytest.approx(fss(f2, o2, np.float32(t), scale), rel=1e-12)


def test_matches_pysteps_accumulated_over_clips_and_channels_with_missing_data():
    rng = np.random.default_rng(6)
    truth = rng.gamma(0.5, 4.0, (4, 2, 32, 29, 2)).astype(np.float32)
    fcst = (np.roll(truth, 3, axis=2) * rng.lognormal(0, 0.5, truth.shape)).astype(np.float32)
    truth[:, :, :3, :5] = nan
    fcst[rng.random(fcst.shape) < 0.01] = nan
    scales = (1, 3, 9)
    s = verification_scores(fcst, truth, THRESHOLDS, pools=(), fss_scales=scales)
    ok = np.isfinite(truth)
    fcst_masked = np.where(ok, fcst, nan)  # pysteps' FSS: non-finite is a non-event in either field
    for t in THRESHOLDS:
        label = threshold_label(t)
        for n in range(2):
            table = det_cat_fct_init(below(t))
            objs = {scale: fss_init(np.float32(t), scale) for scale in scales}
            for b in range(4):
                for c in range(2):
                    keep = ok[b, n, ..., c]
                    det_cat_fct_accum(table, fcst[b, n, ..., c][keep], truth[b, n, ..., c][keep])
                    for scale in scales:
                        fss_accum(objs[scale], fcst_masked[b, n, ..., c], truth[b, n, ..., c])
            assert _ours(s, label, n) == _approx(_pysteps_table(det_cat_fct_compute(table, scores=SCORES)))
            assert s["counts"][label]["hits"][n] == table["hits"]
            for scale in scales:
                assert s["fss"][label][str(scale)][n] == pytest.approx(fss_compute(objs[scale]), rel=1e-12)


def _pooled_csi_reference(fcst: np.ndarray, truth: np.ndarray, t: float, k: int) -> float | None:
    """Block by block, in plain Python."""
    a = b = c = 0
    H, W = truth.shape
    for i in range(0, H - k + 1, k):
        for j in range(0, W - k + 1, k):
            tb, fb = truth[i : i + k, j : j + k], fcst[i : i + k, j : j + k]
            valid = np.isfinite(tb)
            if not valid.any():
                continue
            fv = fb[valid & ~np.isnan(fb)]
            fe = fv.size > 0 and fv.max() >= t
            oe = tb[valid].max() >= t
            a, b, c = a + (fe and oe), b + (fe and not oe), c + (oe and not fe)
    return None if a + b + c == 0 else a / (a + b + c)


def test_pooled_csi_matches_a_block_by_block_reference():
    rng = np.random.default_rng(7)
    truth = rng.gamma(0.4, 4.0, (1, 1, 35, 21, 1))
    fcst = np.roll(truth, 1, axis=2) * rng.lognormal(0, 0.5, truth.shape)
    truth[rng.random(truth.shape) < 0.2] = nan
    truth[0, 0, :8, :8] = nan  # whole blocks without data
    fcst[rng.random(truth.shape) < 0.1] = nan
    s = verification_scores(fcst, truth, [1, 4, 10], pools=(2, 4, 8), fss_scales=())
    for t in (1, 4, 10):
        for k in (2, 4, 8):
            ref = _pooled_csi_reference(fcst[0, 0, ..., 0], truth[0, 0, ..., 0], t, k)
            assert s["csi_pool"][str(k)][str(t)] == [ref]


def test_output_layout_and_labels():
    truth = np.random.default_rng(8).gamma(0.5, 4.0, (2, 3, 8, 8, 1))
    s = verification_scores(truth, truth, ["0.50", 2, 16.0])
    assert set(s) == {"csi", "pod", "far", "bias", "hss", "csi_pool", "fss", "csi_m", "counts"}
    assert list(s["csi"]) == ["0.50", "2", "16"]
    assert list(s["csi_pool"]) == [str(k) for k in DEFAULT_POOLS]
    assert list(s["fss"]["2"]) == [str(n) for n in DEFAULT_FSS_SCALES]
    assert all(len(v) == 3 for v in s["csi"].values()) and len(s["csi_m"]) == 3
    assert all(type(v) is int for v in s["counts"]["2"]["hits"])
    json.dumps(s)
    none = verification_scores(truth, truth, [1], pools=[], fss_scales=[], labels=["one"])
    assert none["csi_pool"] == {} and none["fss"] == {} and list(none["csi"]) == ["one"]


def test_threshold_label():
    assert [threshold_label(x) for x in (0.5, 2.0, 16, 1e-5, -0.0)] == ["0.5", "2", "16", "1e-05", "0"]
    assert threshold_label(np.float32(0.1)) == "0.1" and threshold_label(np.int64(74)) == "74"
    assert threshold_label("0.50") == "0.50"


def test_default_thresholds():
    assert default_thresholds("mm/h") == [0.5, 2, 5, 10, 30]
    assert default_thresholds("mm h-1") == default_thresholds(" MM/hr ") == [0.5, 2, 5, 10, 30]
    assert default_thresholds("VIL") == [16, 74, 133, 160, 181, 219]
    # SEVIR's thresholds are digitised VIL levels (0..255), not kg m-2: no default for physical VIL
    assert default_thresholds("kg m-2") == [] and default_thresholds("K") == [] and default_thresholds("") == []


@pytest.mark.parametrize("call, match", [
    (lambda: verification_scores(np.zeros((2, 4, 4, 1)), np.zeros((2, 4, 4, 1)), [1]), "must be"),
    (lambda: verification_scores(np.zeros((1, 2, 4, 4, 1)), np.zeros((1, 2, 4, 5, 1)), [1]), "differ in shape"),
    (lambda: verification_scores(np.zeros((1, 2, 4, 4, 1)), np.zeros((1, 2, 4, 4, 1)), []), "at least one"),
    (lambda: verification_scores(np.zeros((1, 2, 4, 4, 1)), np.zeros((1, 2, 4, 4, 1)), [1], fss_scales=(2,)),
     "odd"),
    (lambda: verification_scores(np.zeros((1, 2, 4, 4, 1)), np.zeros((1, 2, 4, 4, 1)), [1], fss_scales=(0,)),
     "odd"),
    (lambda: verification_scores(np.zeros((1, 2, 4, 4, 1)), np.zeros((1, 2, 4, 4, 1)), [1], pools=(0,)), "pool"),
    (lambda: verification_scores(np.zeros((1, 2, 4, 4, 1)), np.zeros((1, 2, 4, 4, 1)), [1, 1.0]), "distinct"),
    (lambda: verification_scores(np.zeros((1, 2, 4, 4, 1)), np.zeros((1, 2, 4, 4, 1)), [1], labels=["a", "b"]),
     "labels"),
    (lambda: verification_scores(np.zeros((1, 2, 4, 4, 1)), np.zeros((1, 2, 4, 4, 1)), [nan]), "finite"),
    (lambda: verification_scores(np.zeros((1, 2, 4, 4, 1)), np.zeros((1, 2, 4, 4, 1)), [1],
                                 valid=np.ones((3, 1), bool)), "broadcast"),
    (lambda: ScoreAccumulator(3, [1]).update(np.zeros((1, 2, 4, 4, 1)), np.zeros((1, 2, 4, 4, 1))), "lead times"),
    (lambda: ScoreAccumulator(3, [1]).compute(), "no clips"),
    (lambda: ScoreAccumulator(0, [1]), "horizon"),
])
def test_invalid_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()

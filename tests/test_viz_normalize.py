"""Sign selection and scaling: Captum's conventions, without Captum's failure on maps with nothing to show."""

import warnings

import numpy as np
import pytest
import torch
from captum.attr._utils.visualization import _normalize_attr as captum_normalize_attr

from noisegrad.viz._arrays import as_array, batch_nhwc, image_hwc
from noisegrad.viz._normalize import attribution_scale, normalize_attr, reduce_channels, resolve_sign, validate_sign


@pytest.mark.parametrize("sign", ["all", "positive", "negative", "absolute_value"])
@pytest.mark.parametrize("outlier_perc", [0, 2, 10])
def test_normalisation_equals_captums(sign, outlier_perc):
    values = np.random.default_rng(outlier_perc).normal(size=(9, 11))
    ours = normalize_attr(values, sign, attribution_scale([values], sign, outlier_perc))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum_normalize_attr(values, sign, outlier_perc)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


@pytest.mark.parametrize("values, sign", [(np.zeros((4, 4)), "all"), (-np.ones((4, 4)), "positive"),
                                           (np.ones((4, 4)), "negative"), (np.zeros((4, 4)), "absolute_value")])
def test_nothing_to_show_has_scale_zero_and_normalises_to_zeros(values, sign):
    scale = attribution_scale([values], sign)
    assert scale == 0.0
    assert not normalize_attr(values, sign, scale).any()


def test_outlier_clipping_ignores_a_single_extreme_pixel():
    values = np.ones(100)
    values[0] = 1000.0  # 91 % of the mass in one pixel: clipping 2 % of the mass still keeps it...
    assert attribution_scale([values], "positive", 2) == 1000.0
    values[0] = 1.5  # ...but a pixel holding less than 2 % of the mass is clipped to full colour
    assert attribution_scale([values], "positive", 2) == 1.0


def test_a_shared_scale_pools_all_maps():
    weak, strong = np.full(10, 1.0), np.full(10, 4.0)
    assert attribution_scale([weak], "all", 0) == 1.0
    assert attribution_scale([weak, strong], "all", 0) == 4.0


def test_auto_sign_is_all_for_signed_maps_and_positive_for_unsigned_ones():
    assert resolve_sign("auto", np.array([0.0, 1.0])) == "positive"
    assert resolve_sign("auto", np.array([0.0, 1.0]), np.array([-1e-9])) == "all"
    assert validate_sign("absolute") == "absolute_value"


def test_bad_sign_names_the_argument_and_lists_the_choices():
    with pytest.raises(ValueError, match=r"sign must be one of .*'positive'.*got 'pos'"):
        validate_sign("pos")


def test_bad_outlier_perc_and_reduction_are_named():
    with pytest.raises(ValueError, match="outlier_perc"):
        attribution_scale([np.ones(3)], "all", 100)
    with pytest.raises(ValueError, match="channel_reduction must be one of"):
        reduce_channels(np.ones((2, 2, 3)), "max")


def test_tensors_on_any_dtype_and_numpy_arrays_read_the_same():
    x = torch.randn(3, 5, 7)
    np.testing.assert_allclose(as_array(x.to(torch.bfloat16), "attr"), x.to(torch.bfloat16).double().numpy())
    np.testing.assert_array_equal(image_hwc(x, "attr"), image_hwc(x.numpy(), "attr"))


def test_channel_first_and_channel_last_give_the_same_image():
    chw = torch.randn(3, 6, 9)
    np.testing.assert_array_equal(image_hwc(chw, "a"), image_hwc(chw.permute(1, 2, 0), "a"))
    np.testing.assert_array_equal(batch_nhwc(chw[None], "a"), batch_nhwc(chw[None].permute(0, 2, 3, 1), "a"))
    # an explicit layout wins over the guess
    assert image_hwc(np.zeros((4, 4, 3)), "a", channels_last=False).shape == (4, 3, 4)


def test_non_finite_and_non_numeric_inputs_are_refused():
    with pytest.raises(ValueError, match="NaN or infinite"):
        as_array(torch.tensor([1.0, float("nan")]), "attr")
    with pytest.raises(TypeError, match="attr must be a torch.Tensor or a numpy array"):
        as_array({"a": 1}, "attr")
    with pytest.raises(ValueError, match=r"image of shape \(C, H, W\)"):
        image_hwc(np.zeros((1, 2, 3, 4)), "attr")

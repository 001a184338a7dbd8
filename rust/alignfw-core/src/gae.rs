//! Generalized advantage estimation (Schulman et al. 2015, <https://arxiv.org/abs/1506.02438>).
//!
//! Reference implementation: the per-timestep loop in TRL's `PPOTrainer` and `alignfw.ops.gae.reference_gae`.
//! Masked positions (padding, prompt tokens, tool output) are skipped: they get zero advantage and zero
//! return, and the recursion carries over them, so a hole in the mask behaves as if the step were absent.
//! For right-padded masks this equals TRL's loop with padded rewards and values set to zero.

use ndarray::{Array2, ArrayView2, ArrayViewMut1, ArrayView1, Axis, Zip};

use crate::error::{Error, Result};

/// Advantages and returns of one sequence, written into `adv` and `ret`.
///
/// `rewards`, `values`, `mask`, `adv`, `ret`: shape `(T,)`. `mask[t] != 0` marks a real step.
#[inline]
pub fn gae_row(
    rewards: ArrayView1<f32>,
    values: ArrayView1<f32>,
    mask: Option<ArrayView1<f32>>,
    gamma: f32,
    lam: f32,
    mut adv: ArrayViewMut1<f32>,
    mut ret: ArrayViewMut1<f32>,
) {
    let t_len = rewards.len();
    let mut next_value = 0.0f32;
    let mut last = 0.0f32;
    let gl = gamma * lam;
    match (rewards.as_slice(), values.as_slice(), adv.as_slice_mut(), ret.as_slice_mut()) {
        // Fast path: contiguous rows (the common case), no bounds checks in the loop.
        (Some(r), Some(v), Some(a), Some(o)) => {
            let m = mask.as_ref().and_then(|m| m.as_slice());
            if mask.is_some() && m.is_none() {
                return gae_row_strided(rewards, values, mask, gamma, lam, adv, ret);
            }
            for t in (0..t_len).rev() {
                if let Some(m) = m {
                    if m[t] == 0.0 {
                        a[t] = 0.0;
                        o[t] = 0.0;
                        continue;
                    }
                }
                let delta = r[t] + gamma * next_value - v[t];
                last = delta + gl * last;
                a[t] = last;
                o[t] = last + v[t];
                next_value = v[t];
            }
        }
        _ => gae_row_strided(rewards, values, mask, gamma, lam, adv, ret),
    }
}

fn gae_row_strided(
    rewards: ArrayView1<f32>,
    values: ArrayView1<f32>,
    mask: Option<ArrayView1<f32>>,
    gamma: f32,
    lam: f32,
    mut adv: ArrayViewMut1<f32>,
    mut ret: ArrayViewMut1<f32>,
) {
    let mut next_value = 0.0f32;
    let mut last = 0.0f32;
    for t in (0..rewards.len()).rev() {
        if mask.as_ref().is_some_and(|m| m[t] == 0.0) {
            adv[t] = 0.0;
            ret[t] = 0.0;
            continue;
        }
        let delta = rewards[t] + gamma * next_value - values[t];
        last = delta + gamma * lam * last;
        adv[t] = last;
        ret[t] = last + values[t];
        next_value = values[t];
    }
}

/// GAE over a batch. `rewards`, `values`, `mask`: shape `(batch, T)`; returns `(advantages, returns)`,
/// both `(batch, T)`. Rows are processed in parallel when the batch is large enough to pay for it.
pub fn gae(
    rewards: ArrayView2<f32>,
    values: ArrayView2<f32>,
    mask: Option<ArrayView2<f32>>,
    gamma: f32,
    lam: f32,
) -> Result<(Array2<f32>, Array2<f32>)> {
    check_shapes(&rewards, &values, mask.as_ref())?;
    let (b, t) = rewards.dim();
    let mut adv = Array2::<f32>::zeros((b, t));
    let mut ret = Array2::<f32>::zeros((b, t));
    gae_into(rewards, values, mask, gamma, lam, adv.view_mut(), ret.view_mut())?;
    Ok((adv, ret))
}

/// Like [`gae`], writing into caller-provided `(batch, T)` outputs (no allocation).
pub fn gae_into(
    rewards: ArrayView2<f32>,
    values: ArrayView2<f32>,
    mask: Option<ArrayView2<f32>>,
    gamma: f32,
    lam: f32,
    mut adv: ndarray::ArrayViewMut2<f32>,
    mut ret: ndarray::ArrayViewMut2<f32>,
) -> Result<()> {
    check_shapes(&rewards, &values, mask.as_ref())?;
    if adv.dim() != rewards.dim() || ret.dim() != rewards.dim() {
        return Err(Error::InvalidInput(format!(
            "outputs {:?} and {:?} must have the shape of rewards {:?}",
            adv.shape(),
            ret.shape(),
            rewards.shape()
        )));
    }
    let (b, t) = rewards.dim();
    // Below ~64k elements the thread hand-off costs more than the work.
    let parallel = b > 1 && b * t >= 1 << 16;
    match mask {
        Some(m) => {
            let z = Zip::from(rewards.axis_iter(Axis(0)))
                .and(values.axis_iter(Axis(0)))
                .and(m.axis_iter(Axis(0)))
                .and(adv.axis_iter_mut(Axis(0)))
                .and(ret.axis_iter_mut(Axis(0)));
            if parallel {
                z.par_for_each(|r, v, m, a, o| gae_row(r, v, Some(m), gamma, lam, a, o));
            } else {
                z.for_each(|r, v, m, a, o| gae_row(r, v, Some(m), gamma, lam, a, o));
            }
        }
        None => {
            let z = Zip::from(rewards.axis_iter(Axis(0)))
                .and(values.axis_iter(Axis(0)))
                .and(adv.axis_iter_mut(Axis(0)))
                .and(ret.axis_iter_mut(Axis(0)));
            if parallel {
                z.par_for_each(|r, v, a, o| gae_row(r, v, None, gamma, lam, a, o));
            } else {
                z.for_each(|r, v, a, o| gae_row(r, v, None, gamma, lam, a, o));
            }
        }
    }
    Ok(())
}

fn check_shapes(rewards: &ArrayView2<f32>, values: &ArrayView2<f32>, mask: Option<&ArrayView2<f32>>) -> Result<()> {
    if rewards.dim() != values.dim() {
        return Err(Error::InvalidInput(format!(
            "rewards {:?} and values {:?} must have the same (batch, T) shape",
            rewards.shape(),
            values.shape()
        )));
    }
    if let Some(m) = mask {
        if m.dim() != rewards.dim() {
            return Err(Error::InvalidInput(format!(
                "mask {:?} must have the shape of rewards {:?}",
                m.shape(),
                rewards.shape()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// The per-timestep loop TRL uses, with masked steps zeroed (right padding only).
    fn loop_reference(r: &[f32], v: &[f32], gamma: f32, lam: f32) -> Vec<f32> {
        let mut out = vec![0.0; r.len()];
        let mut last = 0.0;
        for t in (0..r.len()).rev() {
            let next = if t + 1 < r.len() { v[t + 1] } else { 0.0 };
            let delta = r[t] + gamma * next - v[t];
            last = delta + gamma * lam * last;
            out[t] = last;
        }
        out
    }

    #[test]
    fn matches_loop_without_mask() {
        let r = array![[1.0f32, 0.0, 0.5, -1.0], [0.0, 0.0, 0.0, 2.0]];
        let v = array![[0.1f32, 0.2, 0.3, 0.4], [-0.5, 0.5, 0.0, 1.0]];
        let (adv, ret) = gae(r.view(), v.view(), None, 0.9, 0.8).unwrap();
        for i in 0..2 {
            let want = loop_reference(r.row(i).as_slice().unwrap(), v.row(i).as_slice().unwrap(), 0.9, 0.8);
            for t in 0..4 {
                assert!((adv[[i, t]] - want[t]).abs() < 1e-6);
                assert!((ret[[i, t]] - (want[t] + v[[i, t]])).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn right_padding_equals_truncation() {
        let r = array![[1.0f32, 2.0, 9.0, 9.0]];
        let v = array![[0.5f32, 0.25, 9.0, 9.0]];
        let m = array![[1.0f32, 1.0, 0.0, 0.0]];
        let (adv, ret) = gae(r.view(), v.view(), Some(m.view()), 1.0, 0.95).unwrap();
        let want = loop_reference(&[1.0, 2.0], &[0.5, 0.25], 1.0, 0.95);
        assert!((adv[[0, 0]] - want[0]).abs() < 1e-6 && (adv[[0, 1]] - want[1]).abs() < 1e-6);
        assert_eq!((adv[[0, 2]], adv[[0, 3]], ret[[0, 2]], ret[[0, 3]]), (0.0, 0.0, 0.0, 0.0));
    }

    #[test]
    fn holes_are_skipped() {
        let r = array![[1.0f32, 7.0, 2.0]];
        let v = array![[0.5f32, 7.0, 0.25]];
        let m = array![[1.0f32, 0.0, 1.0]];
        let (adv, _) = gae(r.view(), v.view(), Some(m.view()), 0.9, 0.9).unwrap();
        let want = loop_reference(&[1.0, 2.0], &[0.5, 0.25], 0.9, 0.9);
        assert!((adv[[0, 0]] - want[0]).abs() < 1e-6 && (adv[[0, 2]] - want[1]).abs() < 1e-6);
        assert_eq!(adv[[0, 1]], 0.0);
    }

    #[test]
    fn parallel_path_matches_serial() {
        let (b, t) = (64, 2048);
        let r = Array2::from_shape_fn((b, t), |(i, j)| ((i * 31 + j * 17) % 13) as f32 / 13.0 - 0.5);
        let v = Array2::from_shape_fn((b, t), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 11.0);
        let (adv, _) = gae(r.view(), v.view(), None, 0.99, 0.95).unwrap();
        for i in [0, 17, 63] {
            let want = loop_reference(r.row(i).as_slice().unwrap(), v.row(i).as_slice().unwrap(), 0.99, 0.95);
            for j in [0, 1000, 2047] {
                assert!((adv[[i, j]] - want[j]).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let r = Array2::<f32>::zeros((2, 3));
        let v = Array2::<f32>::zeros((2, 4));
        assert!(matches!(gae(r.view(), v.view(), None, 1.0, 1.0), Err(Error::InvalidInput(_))));
    }
}

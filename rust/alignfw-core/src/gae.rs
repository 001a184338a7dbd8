//! Generalized advantage estimation (Schulman et al. 2015, <https://arxiv.org/abs/1506.02438>).
//!
//! Reference implementation: the per-timestep loop in TRL's `PPOTrainer` and `alignfw.ops.gae.reference_gae`.
//! Masked positions (padding, prompt tokens, tool output) are skipped: they get zero advantage and zero
//! return, and the recursion carries over them, so a hole in the mask behaves as if the step were absent.
//! For right-padded masks this equals TRL's loop with padded rewards and values set to zero.

use ndarray::parallel::prelude::*;
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, Zip};

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
    match (
        rewards.as_slice(),
        values.as_slice(),
        adv.as_slice_mut(),
        ret.as_slice_mut(),
    ) {
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
    mut adv: ArrayViewMut2<f32>,
    mut ret: ArrayViewMut2<f32>,
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
    let unit_stride = t <= 1
        || (rewards.strides()[1] == 1
            && values.strides()[1] == 1
            && mask.as_ref().is_none_or(|m| m.strides()[1] == 1)
            && adv.strides()[1] == 1
            && ret.strides()[1] == 1);
    if !unit_stride {
        // Rare (the Python wrapper always passes contiguous arrays): one row at a time, strided.
        let row = |i: usize, a: ArrayViewMut1<f32>, o: ArrayViewMut1<f32>| {
            let m = mask.as_ref().map(|m| m.row(i));
            gae_row_strided(rewards.row(i), values.row(i), m, gamma, lam, a, o)
        };
        let z = Zip::indexed(adv.axis_iter_mut(Axis(0))).and(ret.axis_iter_mut(Axis(0)));
        if parallel {
            z.par_for_each(&row);
        } else {
            z.for_each(row);
        }
        return Ok(());
    }
    // Without a mask, rows go in pairs for instruction-level parallelism (see `gae_pair`). With one,
    // one row at a time: pairing masked rows (with a branch per row, or branch-free selects) measured
    // no faster, and this keeps the masked arithmetic identical to the plain loop.
    let pair = |(i, (mut a, mut o)): (usize, (ArrayViewMut2<f32>, ArrayViewMut2<f32>))| {
        let i = i * 2;
        match mask.as_ref() {
            None if a.nrows() == 2 => {
                let [a0, a1] = rows_mut(a);
                let [o0, o1] = rows_mut(o);
                let (r, v) = (
                    [row_slice(&rewards, i), row_slice(&rewards, i + 1)],
                    [row_slice(&values, i), row_slice(&values, i + 1)],
                );
                gae_pair(r, v, gamma, lam, [a0, a1], [o0, o1]);
            }
            _ => {
                for (k, (a, o)) in a.axis_iter_mut(Axis(0)).zip(o.axis_iter_mut(Axis(0))).enumerate() {
                    let m = mask.as_ref().map(|m| m.row(i + k));
                    gae_row(rewards.row(i + k), values.row(i + k), m, gamma, lam, a, o);
                }
            }
        }
    };
    let (a_pairs, o_pairs) = (
        adv.axis_chunks_iter_mut(Axis(0), 2),
        ret.axis_chunks_iter_mut(Axis(0), 2),
    );
    if parallel {
        a_pairs.into_par_iter().zip(o_pairs).enumerate().for_each(pair);
    } else {
        a_pairs.zip(o_pairs).enumerate().for_each(pair);
    }
    Ok(())
}

/// The two rows of a `(2, T)` view with unit-stride rows, as slices.
fn rows_mut(x: ArrayViewMut2<'_, f32>) -> [&mut [f32]; 2] {
    let (r0, r1) = x.split_at(Axis(0), 1);
    [r0, r1].map(|r| {
        r.index_axis_move(Axis(0), 0)
            .into_slice()
            .expect("unit stride checked by caller")
    })
}

/// Row `i` of a view whose rows have unit stride, borrowed for the view's lifetime.
fn row_slice<'a>(x: &ArrayView2<'a, f32>, i: usize) -> &'a [f32] {
    (*x).index_axis_move(Axis(0), i)
        .to_slice()
        .expect("unit stride checked by caller")
}

/// Two contiguous rows without a mask, stepped backwards through T together.
///
/// The recursion `last_t = delta_t + c * last_{t+1}` (`c = gamma * lam`) is a chain of dependent
/// multiply-adds (~6 cycles a step), so the plain loop leaves the CPU idle. Two things shorten the
/// chain per element:
/// - two rows at a time: two independent chains overlap. More rows measured slower, not faster:
///   4 rows of T = 1024 ran 5x slower than of T = 1000 (rows a power of two apart alias in L1), and
///   8-row tiles copied through local buffers lost to this kernel on 1024 x 2048 inputs;
/// - two steps at a time: `last_t = (delta_t + c delta_{t+1}) + c^2 last_{t+2}` puts one multiply-add
///   on the chain per two steps, with `last_{t+1}` computed beside it. This associates one sum
///   differently from the plain loop, so results agree with it up to float rounding.
fn gae_pair(r: [&[f32]; 2], v: [&[f32]; 2], gamma: f32, lam: f32, a: [&mut [f32]; 2], o: [&mut [f32]; 2]) {
    let n = r[0].len();
    let [a0, a1] = a;
    let [o0, o1] = o;
    // Re-slicing to one length lets the compiler drop the bounds checks inside the loop.
    let (a0, a1, o0, o1) = (&mut a0[..n], &mut a1[..n], &mut o0[..n], &mut o1[..n]);
    let (r0, r1, v0, v1) = (&r[0][..n], &r[1][..n], &v[0][..n], &v[1][..n]);
    let k = Coeffs {
        gamma,
        c: gamma * lam,
        c2: (gamma * lam) * (gamma * lam),
    };
    let (mut s0, mut s1) = (Lane::default(), Lane::default());
    let mut t = n;
    if n % 2 == 1 {
        t -= 1;
        (a0[t], o0[t]) = s0.step(r0[t], v0[t], &k);
        (a1[t], o1[t]) = s1.step(r1[t], v1[t], &k);
    }
    while t >= 2 {
        t -= 2;
        let (x, y) = s0.step2([r0[t], r0[t + 1]], [v0[t], v0[t + 1]], &k);
        (a0[t], a0[t + 1], o0[t], o0[t + 1]) = (x[0], x[1], y[0], y[1]);
        let (x, y) = s1.step2([r1[t], r1[t + 1]], [v1[t], v1[t + 1]], &k);
        (a1[t], a1[t + 1], o1[t], o1[t + 1]) = (x[0], x[1], y[0], y[1]);
    }
}

struct Coeffs {
    gamma: f32,
    /// gamma * lam
    c: f32,
    /// c * c
    c2: f32,
}

/// The recursion state of one row: the last advantage and the next step's value.
#[derive(Default)]
struct Lane {
    last: f32,
    next_value: f32,
}

impl Lane {
    /// One step; returns `(advantage, return)`. Same arithmetic, in the same order, as the plain loop.
    #[inline(always)]
    fn step(&mut self, r: f32, v: f32, k: &Coeffs) -> (f32, f32) {
        self.last = r + k.gamma * self.next_value - v + k.c * self.last;
        self.next_value = v;
        (self.last, self.last + v)
    }

    /// Steps `t + 1` then `t` (`r[0]` is step `t`); returns `([adv_t, adv_t1], [ret_t, ret_t1])`.
    #[inline(always)]
    fn step2(&mut self, r: [f32; 2], v: [f32; 2], k: &Coeffs) -> ([f32; 2], [f32; 2]) {
        let d1 = r[1] + k.gamma * self.next_value - v[1];
        let d0 = r[0] + k.gamma * v[1] - v[0];
        let l1 = d1 + k.c * self.last;
        let l0 = (d0 + k.c * d1) + k.c2 * self.last; // the only multiply-add on the carried chain
        self.last = l0;
        self.next_value = v[0];
        ([l0, l1], [l0 + v[0], l1 + v[1]])
    }
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
    use ndarray::{array, Array1};

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
        assert_eq!(
            (adv[[0, 2]], adv[[0, 3]], ret[[0, 2]], ret[[0, 3]]),
            (0.0, 0.0, 0.0, 0.0)
        );
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

    /// `gae_into` (row pairs, two-step form, lone last row) against `gae_row` (the plain loop) row by row.
    fn check_against_rows(b: usize, t: usize, masked: bool, strided: bool) {
        let r = Array2::from_shape_fn((b, t), |(i, j)| ((i * 31 + j * 17) % 13) as f32 / 13.0 - 0.5);
        let v = Array2::from_shape_fn((b, t), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 11.0);
        let m = Array2::from_shape_fn((b, t), |(i, j)| {
            if (i * 5 + j * j) % 7 < 2 || j + i > t {
                0.0f32
            } else {
                1.0
            }
        });
        let m = masked.then_some(m);
        let (mut adv, mut ret) = (Array2::<f32>::zeros((b, 2 * t)), Array2::<f32>::zeros((b, 2 * t)));
        let cols = if strided {
            ndarray::s![.., ..;2]
        } else {
            ndarray::s![.., ..t]
        };
        let (a, o) = (adv.slice_mut(cols), ret.slice_mut(cols));
        gae_into(r.view(), v.view(), m.as_ref().map(|m| m.view()), 0.97, 0.9, a, o).unwrap();
        for i in 0..b {
            let (mut wa, mut wo) = (Array1::<f32>::zeros(t), Array1::<f32>::zeros(t));
            let mi = m.as_ref().map(|m| m.row(i));
            gae_row(r.row(i), v.row(i), mi, 0.97, 0.9, wa.view_mut(), wo.view_mut());
            let (ga, go) = (adv.slice(cols).row(i).to_owned(), ret.slice(cols).row(i).to_owned());
            for j in 0..t {
                assert!(
                    (ga[j] - wa[j]).abs() <= 1e-5 * (1.0 + wa[j].abs()),
                    "adv row {i} step {j}"
                );
                assert!(
                    (go[j] - wo[j]).abs() <= 1e-5 * (1.0 + wo[j].abs()),
                    "ret row {i} step {j}"
                );
                if mi.is_some_and(|m| m[j] == 0.0) {
                    assert_eq!((ga[j], go[j]), (0.0, 0.0));
                }
            }
        }
    }

    #[test]
    fn pairs_match_the_plain_loop() {
        for (b, t) in [(1, 1), (2, 1), (2, 2), (3, 7), (5, 37), (4, 64), (7, 300)] {
            for masked in [false, true] {
                for strided in [false, true] {
                    check_against_rows(b, t, masked, strided);
                }
            }
        }
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let r = Array2::<f32>::zeros((2, 3));
        let v = Array2::<f32>::zeros((2, 4));
        assert!(matches!(
            gae(r.view(), v.view(), None, 1.0, 1.0),
            Err(Error::InvalidInput(_))
        ));
    }
}

//! Kernel-only GAE timings, no Python: `cargo run --release -p alignfw-core --example gae_bench [B T]`.
//!
//! Prints the median of 21 calls of: the one-row-at-a-time kernel (`gae_row` over rows, one thread;
//! with and without a mask of right padding and holes),
//! `gae_into` (blocked kernel; rayon pool, set RAYON_NUM_THREADS=1 for one thread), and a copy of
//! rewards/values into the two outputs (same bytes read and written).
use std::time::Instant;

use alignfw_core::gae::{gae_into, gae_row};
use ndarray::{Array2, Axis, Zip};

fn median_ms(mut f: impl FnMut()) -> f64 {
    f();
    let mut ts: Vec<f64> = (0..21)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    ts[ts.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("B T")).collect();
    let (b, t) = if args.len() == 2 {
        (args[0], args[1])
    } else {
        (1024, 2048)
    };
    let r = Array2::from_shape_fn((b, t), |(i, j)| ((i * 31 + j * 17) % 13) as f32 / 13.0 - 0.5);
    let v = Array2::from_shape_fn((b, t), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 11.0);
    // Response masks as PPO sees them: right padding of varying length, a 16-step hole (tool output)
    // in every 4th row.
    let m = Array2::from_shape_fn((b, t), |(i, j)| {
        let padded = j >= t - (i * 37) % (t / 2 + 1);
        let hole = i % 4 == 0 && (t / 4..t / 4 + 16).contains(&j);
        if padded || hole {
            0.0f32
        } else {
            1.0
        }
    });
    let mut a = Array2::<f32>::zeros((b, t));
    let mut o = Array2::<f32>::zeros((b, t));
    for _ in 0..3 {
        let row = median_ms(|| {
            Zip::from(r.axis_iter(Axis(0)))
                .and(v.axis_iter(Axis(0)))
                .and(a.axis_iter_mut(Axis(0)))
                .and(o.axis_iter_mut(Axis(0)))
                .for_each(|r, v, a, o| gae_row(r, v, None, 0.99, 0.95, a, o))
        });
        let row_masked = median_ms(|| {
            Zip::from(r.axis_iter(Axis(0)))
                .and(v.axis_iter(Axis(0)))
                .and(m.axis_iter(Axis(0)))
                .and(a.axis_iter_mut(Axis(0)))
                .and(o.axis_iter_mut(Axis(0)))
                .for_each(|r, v, m, a, o| gae_row(r, v, Some(m), 0.99, 0.95, a, o))
        });
        let blocked = median_ms(|| gae_into(r.view(), v.view(), None, 0.99, 0.95, a.view_mut(), o.view_mut()).unwrap());
        let masked = median_ms(|| {
            gae_into(
                r.view(),
                v.view(),
                Some(m.view()),
                0.99,
                0.95,
                a.view_mut(),
                o.view_mut(),
            )
            .unwrap()
        });
        let copy = median_ms(|| {
            a.assign(&r);
            o.assign(&v);
        });
        println!("{b}x{t}: per-row {row:.3} ms | per-row masked {row_masked:.3} ms | gae_into {blocked:.3} ms | gae_into masked {masked:.3} ms | copy {copy:.3} ms");
    }
}

//! A web page shaped like the paper's New York Times snapshot (Socket
//! Intents §5: about 130 objects, 48 B to 263 KB, median 6 KB, mean 21 KB,
//! 2.8 MB in all): object sizes are the quantiles of a log-normal
//! distribution whose median is 6 KB and whose σ is chosen so that the
//! sizes, clamped to the paper's range, average 21 KB. Deterministic.
use std::path::Path;

use anyhow::Result;
use statrs::distribution::{ContinuousCDF, Normal};

/// Objects on the page.
pub const OBJECTS: usize = 130;
/// Median object size, bytes.
pub const MEDIAN_BYTES: f64 = 6_000.0;
/// Mean object size, bytes.
pub const MEAN_BYTES: f64 = 21_000.0;
/// Smallest and largest object, bytes.
pub const RANGE_BYTES: (u64, u64) = (48, 263_000);

fn sizes_for(sigma: f64) -> Vec<u64> {
    let z = Normal::new(0.0, 1.0).expect("standard normal");
    (0..OBJECTS)
        .map(|i| {
            let p = (i as f64 + 0.5) / OBJECTS as f64;
            let s = (MEDIAN_BYTES.ln() + sigma * z.inverse_cdf(p)).exp();
            (s.round() as u64).clamp(RANGE_BYTES.0, RANGE_BYTES.1)
        })
        .collect()
}

/// The page's object sizes, bytes, ascending.
pub fn object_sizes() -> Vec<u64> {
    // The clamped mean grows with σ: bisect for 21 KB.
    let (mut lo, mut hi) = (0.1f64, 4.0f64);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        let v = sizes_for(mid);
        if (v.iter().sum::<u64>() as f64 / OBJECTS as f64) < MEAN_BYTES {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    sizes_for(hi)
}

/// Writes the page into `root`: `page/o000.bin`.. (interleaved sizes, as a
/// page mixes small and large objects) and `bulk.bin` of `bulk_bytes`, plus
/// `warm.bin` (512 KB). Returns (path relative to `root`, size in bytes) of
/// every page object in page order. Errors: a file could not be written.
pub fn write(root: &Path, bulk_bytes: u64) -> Result<Vec<(String, u64)>> {
    let dir = root.join("page");
    std::fs::create_dir_all(&dir)?;
    let sizes = object_sizes();
    // Page order: alternate from both ends, so large objects are spread over the load.
    let mut order = Vec::with_capacity(OBJECTS);
    let (mut i, mut j) = (0usize, OBJECTS);
    while i < j {
        order.push(sizes[i]);
        i += 1;
        if i < j {
            j -= 1;
            order.push(sizes[j]);
        }
    }
    let mut objects = Vec::new();
    for (k, s) in order.iter().enumerate() {
        let name = format!("page/o{k:03}.bin");
        std::fs::write(root.join(&name), vec![b'x'; *s as usize])?;
        objects.push((name, *s));
    }
    std::fs::write(root.join("bulk.bin"), vec![b'b'; bulk_bytes as usize])?;
    std::fs::write(root.join("warm.bin"), vec![b'w'; 512 * 1024])?;
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_papers_page() {
        let s = object_sizes();
        assert_eq!(s.len(), 130);
        let median = (s[64] + s[65]) / 2;
        let mean = s.iter().sum::<u64>() / 130;
        assert!((5_500..6_500).contains(&median), "median {median}");
        assert!((20_000..22_000).contains(&mean), "mean {mean}");
        assert_eq!((s[0], *s.last().unwrap()), (RANGE_BYTES.0.max(s[0]), RANGE_BYTES.1.min(*s.last().unwrap())));
    }
}

//! A small seeded generator (xorshift64): benchmark topologies and simulated faults repeat
//! exactly from their seed. Not for anything a peer could exploit.

// Without the `sim` feature only fault plans draw from it, and nobody outside can make one.
#![cfg_attr(not(feature = "sim"), allow(dead_code))]

/// A seeded xorshift64 generator.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (0 is replaced, since xorshift would stay at 0).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next raw 64-bit number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// The next number below `n` (which must be above 0).
    #[cfg(any(test, feature = "sim"))]
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A number in `[0, 1)`.
    pub fn fraction(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `want` distinct numbers below `n` (all of them if `n <= want`), in the order drawn.
    #[cfg(any(test, feature = "sim"))]
    pub fn distinct_below(&mut self, n: usize, want: usize) -> Vec<usize> {
        if n <= want {
            return (0..n).collect();
        }
        let mut picked = Vec::with_capacity(want);
        while picked.len() < want {
            let candidate = self.below(n);
            if !picked.contains(&candidate) {
                picked.push(candidate);
            }
        }
        picked
    }
}

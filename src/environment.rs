//! Time and randomness enter through here, never from globals: production passes the
//! system clock and a seeded generator, the simulator its virtual clock and its seed.

/// What a command handler needs from the outside world besides the store.
pub trait Environment: Send {
    /// Milliseconds since the Unix epoch on this node's clock (recorded in event metadata).
    fn now_millis(&self) -> u64;
    /// A uniformly random number, for retry jitter.
    fn random_u64(&mut self) -> u64;
}

/// SplitMix64: a tiny, fast, seedable generator. Same seed, same sequence.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound > 0`), with negligible bias for small bounds.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "empty range");
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// The system clock plus a seeded generator: for production and real-tokio tests.
#[derive(Clone, Debug)]
pub struct SystemEnvironment {
    rng: SplitMix64,
}

impl SystemEnvironment {
    pub fn new(seed: u64) -> SystemEnvironment {
        SystemEnvironment {
            rng: SplitMix64::new(seed),
        }
    }
}

impl Environment for SystemEnvironment {
    fn now_millis(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn random_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
}

/// A fixed clock and a seeded generator: fully deterministic, for tests and models.
#[derive(Clone, Debug)]
pub struct FixedEnvironment {
    pub now_millis: u64,
    rng: SplitMix64,
}

impl FixedEnvironment {
    pub fn new(now_millis: u64, seed: u64) -> FixedEnvironment {
        FixedEnvironment {
            now_millis,
            rng: SplitMix64::new(seed),
        }
    }
}

impl Environment for FixedEnvironment {
    fn now_millis(&self) -> u64 {
        self.now_millis
    }

    fn random_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
}

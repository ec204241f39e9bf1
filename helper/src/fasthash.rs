//! A fast, non-cryptographic hasher for the hit path's maps, keyed by object addresses and small
//! integers (the default SipHash costs more than the rest of a lookup). Keys are never
//! attacker-controlled strings, so hash flooding is not a concern.
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FxHash (as in rustc): rotate, xor, multiply.
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.hash = (self.hash.rotate_left(5) ^ w).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn write_i32(&mut self, i: i32) {
        self.add(i as u32 as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// A HashMap with [`FxHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinguishes_keys() {
        let mut m: FastMap<(usize, u32), u32> = FastMap::default();
        for i in 0..1000usize {
            m.insert((i * 16, (i % 7) as u32), i as u32);
        }
        for i in 0..1000usize {
            assert_eq!(m.get(&(i * 16, (i % 7) as u32)), Some(&(i as u32)));
        }
        let mut s: FastMap<String, bool> = FastMap::default();
        s.insert("password".into(), true);
        assert_eq!(s.get("password"), Some(&true));
        assert_eq!(s.get("passwore"), None);
    }
}

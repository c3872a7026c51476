//! The key of a stored reading: (five-minute chunk, series, second within the chunk) packed into
//! one SQLite rowid.
//!
//! Why: a reading then costs a 7-byte key and an 8-byte value (about 20 bytes on disk with the
//! b-tree's own overhead), and because readings are moved out of the arrival table one closed
//! chunk at a time, in key order, every insert appends at the end of the b-tree: pages fill
//! completely and an SD card sees each page written about once. One series over a time range is
//! one short range scan per chunk.

/// Chunks count from 2020-01-01T00:00:00Z, a multiple of five minutes, so chunks are
/// five-minute buckets in every time zone (all offsets are multiples of 15 minutes).
pub const EPOCH: i64 = 1_577_836_800;
/// Seconds per chunk; also the finest rollup.
pub const CHUNK_S: i64 = 300;
const OFFSET_BITS: u32 = 9;
const SERIES_BITS: u32 = 16;
/// Series ids must stay below this (65,535 points per hub).
pub const MAX_SERIES: i64 = 1 << SERIES_BITS;

/// The chunk a timestamp (unix seconds) falls in.
pub fn chunk_of(ts: i64) -> i64 {
    ts.saturating_sub(EPOCH).div_euclid(CHUNK_S)
}

/// The first second of a chunk.
pub fn chunk_start(chunk: i64) -> i64 {
    EPOCH.saturating_add(chunk.saturating_mul(CHUNK_S))
}

/// Packs a reading's key. `series` must be in `1..MAX_SERIES`.
pub fn pack(series: i64, ts: i64) -> i64 {
    let offset = ts.saturating_sub(EPOCH).rem_euclid(CHUNK_S);
    before_chunk(chunk_of(ts)).saturating_add((series << OFFSET_BITS) + offset)
}

/// The inverse of [`pack`]: (series, ts).
pub fn unpack(key: i64) -> (i64, i64) {
    let chunk = key >> (SERIES_BITS + OFFSET_BITS);
    let series = (key >> OFFSET_BITS) & (MAX_SERIES - 1);
    let offset = key & ((1 << OFFSET_BITS) - 1);
    (series, chunk_start(chunk) + offset)
}

/// The key range of one series within one chunk.
pub fn series_range(chunk: i64, series: i64) -> (i64, i64) {
    let base = before_chunk(chunk).saturating_add(series << OFFSET_BITS);
    (base, base.saturating_add(CHUNK_S - 1))
}

/// Every key of every series before `chunk`. Saturates: timestamps from a clock gone wild
/// (thousands of years off) sort at the ends instead of wrapping around.
pub fn before_chunk(chunk: i64) -> i64 {
    chunk.saturating_mul(1 << (SERIES_BITS + OFFSET_BITS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_sort_by_chunk_then_series_then_time() {
        let t = 1_790_000_000;
        let c = chunk_start(chunk_of(t));
        assert!(pack(1, c + 299) < pack(2, c));
        assert!(pack(65_535, c + 299) < pack(1, c + 300));
        assert!(pack(7, c) < pack(7, c + 1));
    }

    #[test]
    fn keys_of_2026_fit_in_seven_varint_bytes() {
        // SQLite stores a rowid below 2^49 in at most 7 bytes.
        let key = pack(MAX_SERIES - 1, 1_790_000_000);
        assert!(key < 1 << 49, "{key}");
    }

    #[test]
    fn a_series_range_holds_exactly_its_chunk() {
        let t = 1_790_000_123;
        let (lo, hi) = series_range(chunk_of(t), 42);
        assert_eq!(unpack(lo), (42, chunk_start(chunk_of(t))));
        assert_eq!(unpack(hi), (42, chunk_start(chunk_of(t)) + 299));
    }

    #[test]
    fn absurd_times_saturate_instead_of_wrapping() {
        assert_eq!(before_chunk(i64::MAX / 300), i64::MAX);
        assert!(pack(1, i64::MIN) < pack(1, 0));
        assert!(pack(1, i64::MAX) > pack(1, 4_000_000_000));
        assert!(chunk_start(chunk_of(i64::MAX)) > 0);
    }

    proptest! {
        #[test]
        fn pack_and_unpack_agree_even_before_the_epoch(series in 1i64..MAX_SERIES, ts in 0i64..4_000_000_000) {
            prop_assert_eq!(unpack(pack(series, ts)), (series, ts));
        }
    }
}

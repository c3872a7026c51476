//! Which requests read a device's points: neighbouring registers are coalesced into as few
//! reads as the 125-register limit allows, spanning small unused gaps (Telegraf's optimiser),
//! because on RS-485 a request costs far more than the registers it carries. Pure code.

use crate::profile::{Function, ModbusLimits, Profile, RegisterSpec};

/// One read request and the points it carries (indices into the caller's point list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBlock {
    pub function: Function,
    pub start: u16,
    pub count: u16,
    pub points: Vec<usize>,
}

impl ReadBlock {
    /// Registers (or bits) of point `spec` within this block's answer.
    pub fn slice_of(&self, spec: &RegisterSpec) -> std::ops::Range<usize> {
        let from = usize::from(spec.address - self.start);
        from..from + usize::from(spec.length)
    }
}

/// Plans the reads for `points` (index, register spec), fewest requests first.
pub fn plan(points: &[(usize, &RegisterSpec)], limits: ModbusLimits) -> Vec<ReadBlock> {
    let mut sorted: Vec<(usize, &RegisterSpec)> = points.to_vec();
    sorted.sort_by_key(|(i, s)| (s.function, s.address, s.end(), *i));
    let mut blocks: Vec<ReadBlock> = Vec::new();
    let mut end: u32 = 0;
    for (i, spec) in sorted {
        let (max, gap) = if spec.function.is_bits() {
            // Bits are cheap: 16 of them cost what one register does.
            (spec.function.max_quantity(), u32::from(limits.max_gap) * 16)
        } else {
            (limits.max_registers, u32::from(limits.max_gap))
        };
        if let Some(b) = blocks.last_mut() {
            let fits = b.function == spec.function
                && u32::from(spec.address) <= end + gap
                && end.max(spec.end()) - u32::from(b.start) <= u32::from(max);
            if fits {
                end = end.max(spec.end());
                b.count = (end - u32::from(b.start)) as u16;
                b.points.push(i);
                continue;
            }
        }
        end = spec.end();
        blocks.push(ReadBlock {
            function: spec.function,
            start: spec.address,
            count: spec.length,
            points: vec![i],
        });
    }
    blocks
}

/// The fewest requests that can read `points` at all: any gap may be read, only the size limit
/// counts. The yardstick of the poll-efficiency benchmark.
pub fn min_requests(points: &[(usize, &RegisterSpec)], max_registers: u16) -> usize {
    plan(
        points,
        ModbusLimits {
            max_registers,
            max_gap: u16::MAX,
        },
    )
    .len()
}

/// [`min_requests`] for every register point of a profile.
pub fn min_requests_of(profile: &Profile) -> usize {
    min_requests(&profile.register_points(), profile.limits.max_registers)
}

/// One request per point: the fallback when a device refuses a coalesced read (some meters answer
/// "illegal data address" for registers inside a gap).
pub fn split(block: &ReadBlock, specs: &dyn Fn(usize) -> Option<RegisterSpec>) -> Vec<ReadBlock> {
    block
        .points
        .iter()
        .filter_map(|&i| {
            let s = specs(i)?;
            Some(ReadBlock {
                function: s.function,
                start: s.address,
                count: s.length,
                points: vec![i],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{DataType, WordOrder};
    use proptest::prelude::*;

    fn reg(function: Function, address: u16, length: u16) -> RegisterSpec {
        RegisterSpec {
            function,
            address,
            dtype: if length == 2 {
                DataType::F32
            } else {
                DataType::U16
            },
            order: WordOrder::ABCD,
            length,
            bit: None,
            scale: 1.0,
            offset: 0.0,
            values: None,
        }
    }

    fn run(specs: &[RegisterSpec], limits: ModbusLimits) -> Vec<ReadBlock> {
        let pts: Vec<(usize, &RegisterSpec)> = specs.iter().enumerate().collect();
        plan(&pts, limits)
    }

    #[test]
    fn neighbouring_registers_are_read_in_one_request() {
        let specs: Vec<_> = (0..10)
            .map(|i| reg(Function::Holding, 0x2000 + i * 2, 2))
            .collect();
        let b = run(&specs, ModbusLimits::default());
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].start, b[0].count), (0x2000, 20));
        assert_eq!(b[0].points.len(), 10);
    }

    #[test]
    fn small_gaps_are_filled_and_large_ones_split() {
        let specs = vec![
            reg(Function::Holding, 0, 2),
            reg(Function::Holding, 10, 2),  // gap 8: filled
            reg(Function::Holding, 200, 2), // gap 188: a new request
        ];
        let limits = ModbusLimits {
            max_registers: 125,
            max_gap: 10,
        };
        let b = run(&specs, limits);
        assert_eq!(
            b.iter().map(|b| (b.start, b.count)).collect::<Vec<_>>(),
            vec![(0, 12), (200, 2)]
        );
    }

    #[test]
    fn a_request_never_exceeds_the_register_limit() {
        let specs: Vec<_> = (0..100).map(|i| reg(Function::Input, i * 2, 2)).collect();
        let b = run(&specs, ModbusLimits::default());
        assert_eq!(b.iter().map(|b| b.count).collect::<Vec<_>>(), vec![124, 76]);
        let small = run(
            &specs,
            ModbusLimits {
                max_registers: 40,
                max_gap: 50,
            },
        );
        assert!(small.iter().all(|b| b.count <= 40));
        assert_eq!(small.len(), 5);
    }

    #[test]
    fn functions_are_never_mixed_in_one_request() {
        let specs = vec![
            reg(Function::Holding, 0, 1),
            reg(Function::Input, 1, 1),
            reg(Function::Coil, 0, 1),
            reg(Function::Coil, 7, 1),
        ];
        let b = run(&specs, ModbusLimits::default());
        assert_eq!(b.len(), 3);
        let coil = b.iter().find(|b| b.function == Function::Coil).unwrap();
        assert_eq!((coil.start, coil.count), (0, 8));
    }

    #[test]
    fn overlapping_points_share_registers() {
        let specs = vec![
            reg(Function::Holding, 10, 2),
            reg(Function::Holding, 10, 1),
            reg(Function::Holding, 11, 1),
        ];
        let b = run(&specs, ModbusLimits::default());
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].start, b[0].count), (10, 2));
        assert_eq!(b[0].slice_of(&specs[2]), 1..2);
    }

    #[test]
    fn the_last_register_of_the_address_space_can_be_read() {
        let specs = vec![reg(Function::Holding, 65534, 2)];
        let b = run(&specs, ModbusLimits::default());
        assert_eq!((b[0].start, b[0].count), (65534, 2));
    }

    #[test]
    fn split_reads_each_point_alone() {
        let specs = vec![reg(Function::Holding, 0, 2), reg(Function::Holding, 4, 2)];
        let b = run(&specs, ModbusLimits::default());
        let parts = split(&b[0], &|i| specs.get(i).cloned());
        assert_eq!(
            parts.iter().map(|p| (p.start, p.count)).collect::<Vec<_>>(),
            vec![(0, 2), (4, 2)]
        );
    }

    proptest! {
        #[test]
        fn every_point_is_covered_by_exactly_one_request_within_limits(
            raw in proptest::collection::vec((0u16..600, 1u16..5, 0u8..2), 1..60),
            max_registers in 4u16..=125, max_gap in 0u16..60,
        ) {
            let specs: Vec<_> = raw.iter().map(|(a, l, f)| reg(if *f == 0 { Function::Holding } else { Function::Input }, *a, *l)).collect();
            let limits = ModbusLimits { max_registers, max_gap };
            let blocks = run(&specs, limits);
            let mut seen = vec![0; specs.len()];
            for b in &blocks {
                prop_assert!(b.count <= max_registers);
                for &i in &b.points {
                    seen[i] += 1;
                    let s = &specs[i];
                    prop_assert_eq!(s.function, b.function);
                    prop_assert!(s.address >= b.start && s.end() <= u32::from(b.start) + u32::from(b.count));
                }
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
            prop_assert!(blocks.len() >= min_requests(&specs.iter().enumerate().collect::<Vec<_>>(), max_registers));
        }
    }
}

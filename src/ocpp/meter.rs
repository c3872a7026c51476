//! The sampled values of one MeterValues element (one moment on one connector) reduced to the
//! hub's readings: `energy` (kWh), `power` (W), `current` (A), `voltage` (V), `temperature` (°C)
//! and `soc` (%), named `connector{N}.…` for connector N and plainly for connector 0, the charge
//! point as a whole. Pure code.
//!
//! The rules, kept simple on purpose:
//! - A value without a phase is the total. The first one of a measurand counts; later ones (at
//!   another location, say) are left out without complaint. Location is not looked at. The
//!   energy register is the exception: the largest of its values counts, because a register only
//!   rises and chargers send the `Transaction.Begin` reading next to the periodic one.
//! - Per-phase values are used only when a measurand has no value without a phase: then L1, L2
//!   and L3 (or L1-N, L2-N, L3-N; the first seen of a line counts) are summed for energy, power
//!   and current and averaged for voltage, temperature and SoC. N and the line-to-line phases
//!   (L1-L2, …) are left out.
//! - A value that is not a plain decimal number, `SignedData`, a measurand the hub does not
//!   read (Frequency, Power.Offered, the reactive and export registers, …) or a unit that does
//!   not fit its measurand is refused and counted in [`Reduced::rejected`].
//! - Without a unit a value is in its measurand's own unit: Wh for energy (as the spec says),
//!   W, A, V, Celsius and percent for the others.

use super::messages::{Measurand, Phase, SampledValue, UnitOfMeasure, ValueFormat};
use crate::text::clip;

/// Most problems described in one [`Reduced`]; [`Reduced::rejected`] counts them all.
pub const MAX_PROBLEMS: usize = 8;

/// The readings of one moment, and what was refused.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reduced {
    /// Point name, value, unit; at most one of each point, in the order energy, power, current,
    /// voltage, temperature, soc.
    pub readings: Vec<(String, f64, &'static str)>,
    /// Sampled values refused.
    pub rejected: usize,
    /// Why, for the first [`MAX_PROBLEMS`] of them.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quantity {
    Energy,
    Power,
    Current,
    Voltage,
    Temperature,
    Soc,
}

impl Quantity {
    const ALL: [Quantity; 6] = [
        Quantity::Energy,
        Quantity::Power,
        Quantity::Current,
        Quantity::Voltage,
        Quantity::Temperature,
        Quantity::Soc,
    ];

    fn of(m: Measurand) -> Option<Quantity> {
        match m {
            Measurand::EnergyActiveImportRegister => Some(Quantity::Energy),
            Measurand::PowerActiveImport => Some(Quantity::Power),
            Measurand::CurrentImport => Some(Quantity::Current),
            Measurand::Voltage => Some(Quantity::Voltage),
            Measurand::Temperature => Some(Quantity::Temperature),
            Measurand::Soc => Some(Quantity::Soc),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Quantity::Energy => "energy",
            Quantity::Power => "power",
            Quantity::Current => "current",
            Quantity::Voltage => "voltage",
            Quantity::Temperature => "temperature",
            Quantity::Soc => "soc",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Quantity::Energy => "kWh",
            Quantity::Power => "W",
            Quantity::Current => "A",
            Quantity::Voltage => "V",
            Quantity::Temperature => "°C",
            Quantity::Soc => "%",
        }
    }

    /// Whether the phases of this quantity add up to the whole (else they are averaged).
    fn sums(self) -> bool {
        matches!(self, Quantity::Energy | Quantity::Power | Quantity::Current)
    }

    /// `x` in `unit` as this quantity's own unit; `None` when the unit does not fit.
    fn convert(self, x: f64, unit: Option<UnitOfMeasure>) -> Option<f64> {
        use UnitOfMeasure as U;
        match (self, unit) {
            (Quantity::Energy, None | Some(U::Wh)) => Some(x / 1000.0),
            (Quantity::Energy, Some(U::KWh)) => Some(x),
            (Quantity::Power, None | Some(U::W)) => Some(x),
            (Quantity::Power, Some(U::KW)) => Some(x * 1000.0),
            (Quantity::Current, None | Some(U::A)) => Some(x),
            (Quantity::Voltage, None | Some(U::V)) => Some(x),
            (Quantity::Temperature, None | Some(U::Celsius | U::Celcius)) => Some(x),
            (Quantity::Temperature, Some(U::Fahrenheit)) => Some((x - 32.0) * 5.0 / 9.0),
            (Quantity::Temperature, Some(U::K)) => Some(x - 273.15),
            (Quantity::Soc, None | Some(U::Percent)) => Some(x),
            _ => None,
        }
    }
}

/// The point `name` of connector `connector_id`: `connector2.power`, or `power` for 0.
pub fn point_name(connector_id: u32, name: &str) -> String {
    if connector_id == 0 {
        name.to_string()
    } else {
        format!("connector{connector_id}.{name}")
    }
}

/// Reduces the sampled values of one moment on connector `connector_id`.
pub fn reduce(connector_id: u32, sampled: &[SampledValue]) -> Reduced {
    let mut out = Reduced::default();
    let mut totals: [Option<f64>; 6] = [None; 6];
    let mut lines: [[Option<f64>; 3]; 6] = [[None; 3]; 6];
    for sv in sampled {
        let (q, x) = match read(sv) {
            Ok(read) => read,
            Err(problem) => {
                out.rejected += 1;
                if out.problems.len() < MAX_PROBLEMS {
                    out.problems.push(problem);
                }
                continue;
            }
        };
        let i = q as usize;
        match sv.phase.map(line) {
            None if q == Quantity::Energy => {
                totals[i] = Some(totals[i].map_or(x, |t| t.max(x)));
            }
            None => {
                totals[i].get_or_insert(x);
            }
            Some(Some(l)) => {
                lines[i][l].get_or_insert(x);
            }
            Some(None) => {}
        }
    }
    for q in Quantity::ALL {
        let i = q as usize;
        let value = totals[i].or_else(|| {
            let seen: Vec<f64> = lines[i].iter().flatten().copied().collect();
            if seen.is_empty() {
                return None;
            }
            let sum: f64 = seen.iter().sum();
            Some(if q.sums() {
                sum
            } else {
                sum / seen.len() as f64
            })
        });
        // Finite values can still add up past f64's range.
        if let Some(v) = value.filter(|v| v.is_finite()) {
            out.readings
                .push((point_name(connector_id, q.name()), v, q.unit()));
        }
    }
    out
}

/// The quantity and value in the hub's unit of one sampled value, or why it is refused.
fn read(sv: &SampledValue) -> Result<(Quantity, f64), String> {
    if sv.format == Some(ValueFormat::SignedData) {
        return Err("signed data is not read".into());
    }
    let m = sv
        .measurand
        .unwrap_or(Measurand::EnergyActiveImportRegister);
    let q = Quantity::of(m).ok_or_else(|| format!("{m} is not read"))?;
    let x =
        decimal(&sv.value).ok_or_else(|| format!("{m}: {} is not a number", clip(&sv.value)))?;
    let v = q.convert(x, sv.unit).ok_or_else(|| {
        format!(
            "{m}: unit {} does not fit",
            sv.unit.map_or("", |u| u.as_str())
        )
    })?;
    if v.is_finite() {
        Ok((q, v))
    } else {
        Err(format!("{m}: {} is out of range", clip(&sv.value)))
    }
}

/// Which of L1, L2, L3 a phase is on; `None` for N and the line-to-line phases.
fn line(p: Phase) -> Option<usize> {
    match p {
        Phase::L1 | Phase::L1N => Some(0),
        Phase::L2 | Phase::L2N => Some(1),
        Phase::L3 | Phase::L3N => Some(2),
        Phase::N | Phase::L1L2 | Phase::L2L3 | Phase::L3L1 => None,
    }
}

/// A plain decimal number (`1234`, `-0.5`, `7.00`, `1.2e3`): Rust's float syntax without
/// `inf`, `NaN` and friends, which no meter means.
fn decimal(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        return None;
    }
    s.parse::<f64>().ok().filter(|x| x.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocpp::frame::Frame;
    use crate::ocpp::messages::{decode_request, Request, UnitOfMeasure as U};
    use proptest::prelude::*;

    fn sv(value: &str, measurand: Option<Measurand>, unit: Option<U>) -> SampledValue {
        SampledValue {
            value: value.into(),
            context: None,
            format: None,
            measurand,
            phase: None,
            location: None,
            unit,
        }
    }

    fn phased(value: &str, measurand: Measurand, phase: Phase) -> SampledValue {
        SampledValue {
            phase: Some(phase),
            ..sv(value, Some(measurand), None)
        }
    }

    /// The readings of the first MeterValues element of a whole frame.
    fn reduce_frame(text: &str) -> Reduced {
        let Ok(Frame::Call {
            action, payload, ..
        }) = Frame::parse(text)
        else {
            panic!("{text}")
        };
        let Ok(Request::MeterValues(m)) = decode_request(&action, &payload) else {
            panic!("{text}")
        };
        reduce(m.connector_id, &m.meter_value[0].sampled_value)
    }

    fn readings(r: &Reduced) -> Vec<(&str, f64, &str)> {
        r.readings
            .iter()
            .map(|(n, v, u)| (n.as_str(), (v * 1e6).round() / 1e6, *u))
            .collect()
    }

    #[test]
    fn a_real_chargers_meter_values_become_connector_readings() {
        // An Injet Sonic: power in kW, voltage on L1-N only, current only on N (left out).
        let r = reduce_frame(
            r#"[2,"121416101","MeterValues",{"connectorId":1,"transactionId":1725564597,"meterValue":[{"timestamp":"2024-09-05T21:41:59.333Z","sampledValue":[{"measurand":"Energy.Active.Import.Register","unit":"Wh","value":"254780"},{"measurand":"Power.Active.Import","unit":"kW","value":"3.5"},{"measurand":"Temperature","unit":"Celsius","value":"35"},{"measurand":"Voltage","phase":"L1-N","unit":"V","value":"231.1"},{"measurand":"Current.Import","phase":"N","unit":"A","value":"15.6"}]}]}]"#,
        );
        assert_eq!(
            readings(&r),
            vec![
                ("connector1.energy", 254.78, "kWh"),
                ("connector1.power", 3500.0, "W"),
                ("connector1.voltage", 231.1, "V"),
                ("connector1.temperature", 35.0, "°C"),
            ]
        );
        assert_eq!(r.rejected, 0);
    }

    #[test]
    fn the_transaction_begin_reading_does_not_hide_the_current_register_and_phases_add_up() {
        // A Growatt THOR sends its Transaction.Begin reading after the periodic one.
        let r = reduce_frame(
            r#"[2,"3202","MeterValues",{"connectorId":1,"transactionId":1767583807,"meterValue":[{"timestamp":"2026-01-05T14:58:38+10:00","sampledValue":[{"value":"157440","context":"Transaction.Begin","format":"Raw","measurand":"Energy.Active.Import.Register","unit":"Wh"},{"value":"163630","context":"Sample.Periodic","format":"Raw","measurand":"Energy.Active.Import.Register","unit":"Wh"},{"value":"5.84","context":"Sample.Periodic","format":"Raw","measurand":"Current.Import","phase":"L1","unit":"A"},{"value":"5.90","context":"Sample.Periodic","format":"Raw","measurand":"Current.Import","phase":"L2","unit":"A"},{"value":"6.18","context":"Sample.Periodic","format":"Raw","measurand":"Current.Import","phase":"L3","unit":"A"}]}]}]"#,
        );
        assert_eq!(
            readings(&r),
            vec![
                ("connector1.energy", 163.63, "kWh"),
                ("connector1.current", 17.92, "A"),
            ]
        );
    }

    #[test]
    fn what_the_hub_does_not_read_is_counted_as_rejected() {
        // After an ABB-style clock-aligned sample: Frequency and Power.Factor are not read.
        let r = reduce_frame(
            r#"[2,"dd","MeterValues",{"connectorId":2,"meterValue":[{"timestamp":"2024-06-24T14:09:59.453Z","sampledValue":[{"value":"733.255884","context":"Sample.Clock","measurand":"Energy.Active.Import.Register","unit":"kWh"},{"value":"49.95","context":"Sample.Clock","measurand":"Frequency"},{"value":"1.2","context":"Sample.Clock","measurand":"Power.Active.Import","phase":"L1","unit":"kW"},{"value":"1.1","context":"Sample.Clock","measurand":"Power.Active.Import","phase":"L2","unit":"kW"},{"value":"1.3","context":"Sample.Clock","measurand":"Power.Active.Import","phase":"L3","unit":"kW"},{"value":"-0.147","context":"Sample.Clock","measurand":"Power.Factor"},{"value":"25","context":"Sample.Clock","measurand":"Temperature","unit":"Celsius"},{"value":"241.87","context":"Sample.Clock","measurand":"Voltage","phase":"L1","unit":"V"},{"value":"242.29","context":"Sample.Clock","measurand":"Voltage","phase":"L2","unit":"V"},{"value":"400.1","context":"Sample.Clock","measurand":"Voltage","phase":"L1-L2","unit":"V"}]}]}]"#,
        );
        assert_eq!(
            readings(&r),
            vec![
                ("connector2.energy", 733.255884, "kWh"),
                ("connector2.power", 3600.0, "W"),
                ("connector2.voltage", 242.08, "V"),
                ("connector2.temperature", 25.0, "°C"),
            ]
        );
        assert_eq!(r.rejected, 2);
        assert_eq!(
            r.problems,
            vec!["Frequency is not read", "Power.Factor is not read"]
        );
    }

    #[test]
    fn energy_is_in_wh_unless_said_otherwise_and_becomes_kwh() {
        let r = reduce(1, &[sv("12345", None, None)]);
        assert_eq!(readings(&r), vec![("connector1.energy", 12.345, "kWh")]);
        let r = reduce(
            1,
            &[sv(
                "12345",
                Some(Measurand::EnergyActiveImportRegister),
                Some(U::Wh),
            )],
        );
        assert_eq!(readings(&r), vec![("connector1.energy", 12.345, "kWh")]);
        let r = reduce(1, &[sv("12.5", None, Some(U::KWh))]);
        assert_eq!(readings(&r), vec![("connector1.energy", 12.5, "kWh")]);
    }

    #[test]
    fn temperature_in_celsius_celcius_fahrenheit_or_kelvin_is_read_in_degrees_celsius() {
        let t = Some(Measurand::Temperature);
        for (value, unit, expected) in [
            ("41.5", Some(U::Celsius), 41.5),
            ("41.5", Some(U::Celcius), 41.5),
            ("41.5", None, 41.5),
            ("212", Some(U::Fahrenheit), 100.0),
            ("273.15", Some(U::K), 0.0),
        ] {
            let r = reduce(3, &[sv(value, t, unit)]);
            assert_eq!(
                readings(&r),
                vec![("connector3.temperature", expected, "°C")],
                "{value} {unit:?}"
            );
        }
    }

    #[test]
    fn power_in_kw_is_read_in_watts_and_soc_current_and_voltage_as_they_are() {
        let r = reduce(
            1,
            &[
                sv("7.4", Some(Measurand::PowerActiveImport), Some(U::KW)),
                sv("32", Some(Measurand::CurrentImport), Some(U::A)),
                sv("230.5", Some(Measurand::Voltage), None),
                sv("81", Some(Measurand::Soc), Some(U::Percent)),
            ],
        );
        assert_eq!(
            readings(&r),
            vec![
                ("connector1.power", 7400.0, "W"),
                ("connector1.current", 32.0, "A"),
                ("connector1.voltage", 230.5, "V"),
                ("connector1.soc", 81.0, "%"),
            ]
        );
    }

    #[test]
    fn connector_0_is_the_charger_as_a_whole_and_has_plain_point_names() {
        let r = reduce(0, &[sv("1000", None, None)]);
        assert_eq!(readings(&r), vec![("energy", 1.0, "kWh")]);
        assert_eq!(point_name(0, "power"), "power");
        assert_eq!(point_name(12, "power"), "connector12.power");
    }

    #[test]
    fn a_value_without_a_phase_wins_over_the_phases_and_voltage_phases_are_averaged() {
        let p = Measurand::PowerActiveImport;
        let r = reduce(
            1,
            &[
                phased("1000", p, Phase::L1),
                phased("1000", p, Phase::L2),
                sv("2500", Some(p), None),
                phased("230", Measurand::Voltage, Phase::L1N),
                phased("232", Measurand::Voltage, Phase::L2N),
                phased("234", Measurand::Voltage, Phase::L3N),
                // Line-to-line and a second value for L1 are left out.
                phased("400", Measurand::Voltage, Phase::L1L2),
                phased("999", Measurand::Voltage, Phase::L1),
            ],
        );
        assert_eq!(
            readings(&r),
            vec![
                ("connector1.power", 2500.0, "W"),
                ("connector1.voltage", 232.0, "V")
            ]
        );
        assert_eq!(r.rejected, 0);
    }

    #[test]
    fn unreadable_signed_and_ill_fitting_values_are_rejected_and_the_rest_kept() {
        let signed = SampledValue {
            format: Some(ValueFormat::SignedData),
            ..sv("MEUCIQDx…", None, None)
        };
        let r = reduce(
            1,
            &[
                sv("abc", None, None),
                sv("NaN", None, None),
                sv("inf", Some(Measurand::PowerActiveImport), None),
                sv("", Some(Measurand::Voltage), None),
                sv("1e400", Some(Measurand::Voltage), None),
                signed,
                sv("12", None, Some(U::A)),
                sv("5", Some(Measurand::PowerOffered), Some(U::W)),
                sv("5", Some(Measurand::Soc), Some(U::Celsius)),
                sv(" 16.0 ", Some(Measurand::CurrentImport), None),
            ],
        );
        assert_eq!(readings(&r), vec![("connector1.current", 16.0, "A")]);
        assert_eq!(r.rejected, 9);
        assert_eq!(r.problems.len(), MAX_PROBLEMS);
        assert_eq!(
            r.problems[0],
            r#"Energy.Active.Import.Register: "abc" is not a number"#
        );
        assert_eq!(r.problems[5], "signed data is not read");
        assert_eq!(
            r.problems[6],
            "Energy.Active.Import.Register: unit A does not fit"
        );
    }

    #[test]
    fn nothing_sampled_is_nothing_read() {
        assert_eq!(reduce(1, &[]), Reduced::default());
    }

    fn any_sampled() -> impl Strategy<Value = SampledValue> {
        (
            prop_oneof![
                ".{0,10}",
                any::<f64>().prop_map(|x| x.to_string()),
                (-1e6f64..1e6).prop_map(|x| format!("{x:.3}")),
            ],
            proptest::option::of(proptest::sample::select(ValueFormat::ALL)),
            proptest::option::of(proptest::sample::select(Measurand::ALL)),
            proptest::option::of(proptest::sample::select(Phase::ALL)),
            proptest::option::of(proptest::sample::select(U::ALL)),
        )
            .prop_map(|(value, format, measurand, phase, unit)| SampledValue {
                format,
                phase,
                ..sv(&value, measurand, unit)
            })
    }

    proptest! {
        #[test]
        fn any_sampled_values_give_finite_readings_each_point_once(
            connector in 0u32..5,
            sampled in proptest::collection::vec(any_sampled(), 0..20),
        ) {
            let r = reduce(connector, &sampled);
            prop_assert!(r.rejected <= sampled.len());
            prop_assert!(r.readings.len() <= sampled.len() - r.rejected);
            prop_assert!(r.problems.len() <= MAX_PROBLEMS.min(r.rejected));
            let mut names: Vec<&str> = r.readings.iter().map(|(n, _, _)| n.as_str()).collect();
            prop_assert!(r.readings.iter().all(|(_, v, _)| v.is_finite()));
            names.sort_unstable();
            names.dedup();
            prop_assert_eq!(names.len(), r.readings.len());
        }

        #[test]
        fn an_energy_register_in_wh_reads_back_in_kwh(wh in 0u64..10_000_000_000) {
            let r = reduce(1, &[sv(&wh.to_string(), None, Some(U::Wh))]);
            prop_assert_eq!(r.readings, vec![("connector1.energy".to_string(), wh as f64 / 1000.0, "kWh")]);
        }
    }
}

//! `--hours 22:00-07:00`: the daily window (local time) in which the worker may train.
//!
//! A window may wrap past midnight. The clock is injectable (`HEARTH_TEST_NOW=HH:MM`) so tests
//! can place "now" inside or outside a window deterministically.

use std::fmt;
use std::str::FromStr;

use chrono::Timelike;

/// Minutes in a day.
const DAY: u16 = 24 * 60;

/// Environment variable that fixes the local time of day (`HH:MM`), for tests.
pub const NOW_ENV: &str = "HEARTH_TEST_NOW";

/// A bad `--hours` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not `HH:MM-HH:MM`.
    #[error("{0:?} is not a window like 22:00-07:00 (HH:MM-HH:MM, local time)")]
    Shape(String),
    /// A time that does not exist.
    #[error("{0:?} is not a time of day (00:00 to 23:59)")]
    Time(String),
    /// Start equals end: an empty (or full) window is ambiguous.
    #[error("window {0:?} starts and ends at the same time; leave --hours out to train all day")]
    Empty(String),
}

/// A time of day, in minutes since midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay(u16);

impl TimeOfDay {
    /// From hours and minutes; `None` if out of range.
    pub fn new(hours: u16, minutes: u16) -> Option<Self> {
        (hours < 24 && minutes < 60).then_some(Self(hours * 60 + minutes))
    }

    /// Minutes since midnight.
    pub fn minutes(self) -> u16 {
        self.0
    }

    /// The local time of day now, or `HEARTH_TEST_NOW` when set and valid.
    pub fn now() -> Self {
        if let Some(t) = std::env::var(NOW_ENV)
            .ok()
            .and_then(|v| v.parse::<TimeOfDay>().ok())
        {
            return t;
        }
        let now = chrono::Local::now();
        // hour() < 24 and minute() < 60 always hold for a chrono time.
        Self::new(now.hour() as u16, now.minute() as u16).unwrap_or(Self(0))
    }
}

impl FromStr for TimeOfDay {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ScheduleError::Time(s.to_string());
        let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
        if h.is_empty() || h.len() > 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: u16 = h.parse().map_err(|_| bad())?;
        let m: u16 = m.parse().map_err(|_| bad())?;
        Self::new(h, m).ok_or_else(bad)
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// A daily window `[start, end)`; `end < start` wraps past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First minute inside.
    pub start: TimeOfDay,
    /// First minute outside.
    pub end: TimeOfDay,
}

impl Window {
    /// Whether `t` is inside the window.
    pub fn contains(&self, t: TimeOfDay) -> bool {
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }

    /// Minutes from `t` until the window opens (0 when inside).
    pub fn minutes_until_open(&self, t: TimeOfDay) -> u16 {
        if self.contains(t) {
            0
        } else {
            (self.start.0 + DAY - t.0) % DAY
        }
    }
}

impl FromStr for Window {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| ScheduleError::Shape(s.to_string()))?;
        let start: TimeOfDay = a.parse()?;
        let end: TimeOfDay = b.parse()?;
        if start == end {
            return Err(ScheduleError::Empty(s.to_string()));
        }
        Ok(Self { start, end })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TimeOfDay {
        s.parse().unwrap()
    }

    #[test]
    fn daytime_window() {
        let w: Window = "09:30-17:00".parse().unwrap();
        assert!(!w.contains(t("09:29")));
        assert!(w.contains(t("09:30")));
        assert!(w.contains(t("16:59")));
        assert!(!w.contains(t("17:00")));
        assert!(!w.contains(t("00:00")));
        assert_eq!(w.minutes_until_open(t("09:00")), 30);
        assert_eq!(w.minutes_until_open(t("17:00")), 16 * 60 + 30);
        assert_eq!(w.minutes_until_open(t("12:00")), 0);
    }

    #[test]
    fn window_wrapping_past_midnight() {
        let w: Window = "22:00-07:00".parse().unwrap();
        for inside in ["22:00", "23:59", "00:00", "03:15", "06:59"] {
            assert!(w.contains(t(inside)), "{inside}");
        }
        for outside in ["07:00", "12:00", "21:59"] {
            assert!(!w.contains(t(outside)), "{outside}");
        }
        assert_eq!(w.minutes_until_open(t("21:00")), 60);
        assert_eq!(w.minutes_until_open(t("07:00")), 15 * 60);
        assert_eq!(w.to_string(), "22:00-07:00");
    }

    #[test]
    fn single_digit_hours_and_spaces() {
        let w: Window = "7:05 - 9:00".parse().unwrap();
        assert_eq!(w.start.minutes(), 7 * 60 + 5);
        assert_eq!(w.end.minutes(), 9 * 60);
    }

    #[test]
    fn bad_input_is_an_error() {
        for (s, want) in [
            ("22:00", ScheduleError::Shape("22:00".into())),
            ("", ScheduleError::Shape(String::new())),
            ("24:00-07:00", ScheduleError::Time("24:00".into())),
            ("22:60-07:00", ScheduleError::Time("22:60".into())),
            ("22-07", ScheduleError::Time("22".into())),
            ("22:0-07:00", ScheduleError::Time("22:0".into())),
            ("ab:cd-07:00", ScheduleError::Time("ab:cd".into())),
            ("-1:00-07:00", ScheduleError::Time("".into())),
            ("123:00-07:00", ScheduleError::Time("123:00".into())),
            ("08:00-08:00", ScheduleError::Empty("08:00-08:00".into())),
        ] {
            assert_eq!(s.parse::<Window>().unwrap_err(), want, "{s:?}");
        }
    }
}

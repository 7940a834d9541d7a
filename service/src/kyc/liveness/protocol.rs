//! The protocol's rules without I/O: parsing a client message, the order of the challenge's
//! actions, and each frame's size, type, timestamp, rate and count. A broken rule is a
//! [`Violation`], with its code and close code.

use std::collections::VecDeque;
use std::time::Duration;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::Value;
use tokio::time::Instant;

use super::{Action, Limits};
use crate::kyc::model::{ReasonCode, Status};

/// A broken rule: an error message, a close code, and the session failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// Not JSON, JSON of no known shape, or a frame that is not JPEG/PNG; the detail says which.
    BadMessage(&'static str),
    UnknownAction,
    UnexpectedAction,
    FrameOutsideAction,
    FrameTooLarge,
    FrameRateExceeded,
    TimestampNotIncreasing,
    TooManyFrames,
    NotEnoughFrames,
    ActionTimeout,
    SessionExpired,
    VendorUnavailable,
    /// The service is stopping.
    ShuttingDown,
    /// The verdict could not be recorded.
    Internal,
}

impl Violation {
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::BadMessage(_) => "BAD_MESSAGE",
            Self::UnknownAction => "UNKNOWN_ACTION",
            Self::UnexpectedAction => "UNEXPECTED_ACTION",
            Self::FrameOutsideAction => "FRAME_OUTSIDE_ACTION",
            Self::FrameTooLarge => "FRAME_TOO_LARGE",
            Self::FrameRateExceeded => "FRAME_RATE_EXCEEDED",
            Self::TimestampNotIncreasing => "TIMESTAMP_NOT_INCREASING",
            Self::TooManyFrames => "TOO_MANY_FRAMES",
            Self::NotEnoughFrames => "NOT_ENOUGH_FRAMES",
            Self::ActionTimeout => "ACTION_TIMEOUT",
            Self::SessionExpired => "SESSION_EXPIRED",
            Self::VendorUnavailable => "VENDOR_UNAVAILABLE",
            Self::ShuttingDown => "SHUTTING_DOWN",
            Self::Internal => "INTERNAL_ERROR",
        }
    }

    /// The WebSocket close code (RFC 6455 section 7.4.1).
    #[must_use]
    pub fn close_code(self) -> u16 {
        match self {
            Self::BadMessage(_) => 1007,
            Self::FrameTooLarge => 1009,
            Self::VendorUnavailable | Self::Internal => 1011,
            Self::ShuttingDown => 1001,
            _ => 1008,
        }
    }

    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            Self::BadMessage(detail) => detail,
            Self::UnknownAction => {
                "unknown action; the actions are blink, open_mouth, turn_left, turn_right, nod"
            }
            Self::UnexpectedAction => "not the next action of the challenge",
            Self::FrameOutsideAction => "a frame before an action was announced",
            Self::FrameTooLarge => "the frame exceeds max_frame_bytes",
            Self::FrameRateExceeded => "more than max_fps frames within a second",
            Self::TimestampNotIncreasing => "the frame's ts is not after the previous frame's",
            Self::TooManyFrames => "more than max_frames frames in one action",
            Self::NotEnoughFrames => "fewer than min_frames frames in the action",
            Self::ActionTimeout => "the action was not announced or ended within its deadline",
            Self::SessionExpired => "the liveness session has expired",
            Self::VendorUnavailable => "the liveness vendor is unavailable; start a new session",
            Self::ShuttingDown => "the service is restarting; start a new session",
            Self::Internal => "the verdict could not be recorded; start a new session",
        }
    }

    /// Whether the client is to blame (`failed`) or the service (`error`).
    pub(super) fn outcome(self) -> (Status, ReasonCode) {
        match self {
            Self::VendorUnavailable => (Status::Error, ReasonCode::VendorUnavailable),
            Self::ShuttingDown | Self::Internal => (Status::Error, ReasonCode::Interrupted),
            _ => (Status::Failed, ReasonCode::LivenessFailed),
        }
    }
}

/// One client message, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Announce(Action),
    End(Action),
    /// Image bytes; `ts` (ms) only for JSON frames.
    Frame {
        data: Vec<u8>,
        ts: Option<f64>,
    },
}

/// Standard base64 with or without padding, as the vendor contract accepts it.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

const SHAPES: &str =
    r#"expected {"action":…}, {"action":…,"end":true} or {"frame":"<base64>","ts":<ms>}"#;

/// Parses a text message.
///
/// # Errors
/// The [`Violation`] the message commits.
pub fn parse_text(text: &str, limits: &Limits) -> Result<Input, Violation> {
    let v: Value =
        serde_json::from_str(text).map_err(|_| Violation::BadMessage("the message is not JSON"))?;
    let Some(obj) = v.as_object() else {
        return Err(Violation::BadMessage(SHAPES));
    };
    if let Some(frame) = obj.get("frame") {
        let Some(b64) = frame.as_str() else {
            return Err(Violation::BadMessage("frame must be a base64 string"));
        };
        let b64 = match b64.split_once(";base64,") {
            Some((prefix, rest)) if prefix.starts_with("data:") => rest,
            _ => b64,
        };
        if b64.len() / 4 * 3 > limits.max_frame_bytes + 3 {
            return Err(Violation::FrameTooLarge);
        }
        let data = LENIENT_BASE64
            .decode(b64.trim())
            .map_err(|_| Violation::BadMessage("frame is not valid base64"))?;
        let ts =
            match obj.get("ts") {
                None | Some(Value::Null) => None,
                Some(t) => Some(t.as_f64().filter(|t| t.is_finite()).ok_or(
                    Violation::BadMessage("ts must be a number (ms since epoch)"),
                )?),
            };
        return Ok(Input::Frame { data, ts });
    }
    if let Some(action) = obj.get("action") {
        let action = action
            .as_str()
            .ok_or(Violation::BadMessage("action must be a string"))?;
        let action = Action::parse(action).ok_or(Violation::UnknownAction)?;
        return match obj.get("end") {
            None | Some(Value::Bool(false)) => Ok(Input::Announce(action)),
            Some(Value::Bool(true)) => Ok(Input::End(action)),
            Some(_) => Err(Violation::BadMessage("end must be true or false")),
        };
    }
    Err(Violation::BadMessage(SHAPES))
}

fn is_image(data: &[u8]) -> bool {
    data.starts_with(&[0xFF, 0xD8, 0xFF]) || data.starts_with(b"\x89PNG\r\n\x1a\n")
}

/// What an accepted message led to.
#[derive(Debug, PartialEq)]
pub enum Step {
    Started(Action),
    FrameTaken,
    /// The action's frames, ready for the vendor.
    Ended {
        action: Action,
        frames: Vec<Vec<u8>>,
    },
}

struct Current {
    action: Action,
    frames: Vec<Vec<u8>>,
    /// Arrival times of the frames of the last second (at most `max_fps`).
    arrivals: VecDeque<Instant>,
    last_ts: Option<f64>,
}

/// The protocol's rules, without I/O: the order of actions and the frame limits.
pub struct Protocol {
    actions: Vec<Action>,
    limits: Limits,
    next: usize,
    current: Option<Current>,
}

impl Protocol {
    #[must_use]
    pub fn new(actions: Vec<Action>, limits: Limits) -> Self {
        Self {
            actions,
            limits,
            next: 0,
            current: None,
        }
    }

    /// Whether every action has been announced and ended.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.current.is_none() && self.next >= self.actions.len()
    }

    /// Applies one message received at `now`.
    ///
    /// # Errors
    /// The [`Violation`] the message commits; the session is then over.
    pub fn accept(&mut self, input: Input, now: Instant) -> Result<Step, Violation> {
        match input {
            Input::Announce(action) => {
                if self.current.is_some() || self.actions.get(self.next) != Some(&action) {
                    return Err(Violation::UnexpectedAction);
                }
                self.current = Some(Current {
                    action,
                    frames: Vec::new(),
                    arrivals: VecDeque::new(),
                    last_ts: None,
                });
                Ok(Step::Started(action))
            }
            Input::End(action) => {
                let Some(current) = self.current.take_if(|c| c.action == action) else {
                    return Err(Violation::UnexpectedAction);
                };
                if current.frames.len() < self.limits.min_frames {
                    return Err(Violation::NotEnoughFrames);
                }
                self.next += 1;
                Ok(Step::Ended {
                    action,
                    frames: current.frames,
                })
            }
            Input::Frame { data, ts } => {
                let limits = self.limits;
                let Some(c) = self.current.as_mut() else {
                    return Err(Violation::FrameOutsideAction);
                };
                if data.len() > limits.max_frame_bytes {
                    return Err(Violation::FrameTooLarge);
                }
                if !is_image(&data) {
                    return Err(Violation::BadMessage("a frame must be a JPEG or PNG image"));
                }
                if let (Some(ts), Some(last)) = (ts, c.last_ts)
                    && ts <= last
                {
                    return Err(Violation::TimestampNotIncreasing);
                }
                while c
                    .arrivals
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
                {
                    c.arrivals.pop_front();
                }
                if c.arrivals.len() >= limits.max_fps as usize {
                    return Err(Violation::FrameRateExceeded);
                }
                if c.frames.len() >= limits.max_frames {
                    return Err(Violation::TooManyFrames);
                }
                c.arrivals.push_back(now);
                c.last_ts = ts.or(c.last_ts);
                c.frames.push(data);
                Ok(Step::FrameTaken)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0];

    fn limits() -> Limits {
        Limits {
            max_frame_bytes: 1024,
            max_fps: 15,
            min_frames: 3,
            max_frames: 5,
            action_timeout: Duration::from_secs(10),
        }
    }

    fn frame(ts: Option<f64>) -> Input {
        Input::Frame {
            data: JPEG.to_vec(),
            ts,
        }
    }

    #[test]
    fn text_messages_parse_into_the_known_shapes() {
        let l = limits();
        assert_eq!(
            parse_text(r#"{"action":"blink"}"#, &l),
            Ok(Input::Announce(Action::Blink))
        );
        assert_eq!(
            parse_text(r#"{"action":"nod","end":true}"#, &l),
            Ok(Input::End(Action::Nod))
        );
        assert_eq!(
            parse_text(r#"{"frame":"/9j/4AAA","ts":5}"#, &l),
            Ok(Input::Frame {
                data: JPEG.to_vec(),
                ts: Some(5.0)
            })
        );
        assert_eq!(
            parse_text(r#"{"action":"smile"}"#, &l),
            Err(Violation::UnknownAction)
        );
        for bad in [
            "nope",
            "[]",
            r#"{"hello":1}"#,
            r#"{"frame":3}"#,
            r#"{"frame":"!!"}"#,
        ] {
            assert!(
                matches!(parse_text(bad, &l), Err(Violation::BadMessage(_))),
                "{bad}"
            );
        }
        let big = format!(r#"{{"frame":"{}"}}"#, "A".repeat(2000));
        assert_eq!(parse_text(&big, &l), Err(Violation::FrameTooLarge));
    }

    #[test]
    fn actions_come_in_the_challenge_order_with_enough_frames() {
        let now = Instant::now();
        let mut p = Protocol::new(vec![Action::Blink, Action::Nod], limits());
        assert_eq!(
            p.accept(frame(None), now),
            Err(Violation::FrameOutsideAction)
        );
        assert_eq!(
            p.accept(Input::Announce(Action::Nod), now),
            Err(Violation::UnexpectedAction)
        );
        assert_eq!(
            p.accept(Input::Announce(Action::Blink), now),
            Ok(Step::Started(Action::Blink))
        );
        assert_eq!(
            p.accept(Input::Announce(Action::Blink), now),
            Err(Violation::UnexpectedAction)
        );
        p.accept(frame(None), now).expect("frame");
        assert_eq!(
            p.accept(Input::End(Action::Blink), now),
            Err(Violation::NotEnoughFrames)
        );
    }

    #[test]
    fn frames_are_checked_for_size_rate_order_and_count() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let started = |p: &mut Protocol| {
            p.accept(Input::Announce(Action::Blink), t0)
                .expect("started");
        };
        let mut p = Protocol::new(vec![Action::Blink], limits());
        started(&mut p);
        let huge = Input::Frame {
            data: [JPEG, &[0u8; 1024]].concat(),
            ts: None,
        };
        assert_eq!(p.accept(huge, t0), Err(Violation::FrameTooLarge));
        let png_less = Input::Frame {
            data: b"GIF89a".to_vec(),
            ts: None,
        };
        assert!(matches!(
            p.accept(png_less, t0),
            Err(Violation::BadMessage(_))
        ));

        let mut p = Protocol::new(vec![Action::Blink], limits());
        started(&mut p);
        p.accept(frame(Some(10.0)), ms(0)).expect("first");
        assert_eq!(
            p.accept(frame(Some(10.0)), ms(100)),
            Err(Violation::TimestampNotIncreasing)
        );

        let mut p = Protocol::new(
            vec![Action::Blink],
            Limits {
                max_fps: 3,
                ..limits()
            },
        );
        started(&mut p);
        for i in 0..3 {
            p.accept(frame(None), ms(i * 10)).expect("within the rate");
        }
        assert_eq!(
            p.accept(frame(None), ms(500)),
            Err(Violation::FrameRateExceeded)
        );

        let mut p = Protocol::new(vec![Action::Blink], limits());
        started(&mut p);
        for i in 0..5 {
            p.accept(frame(None), ms(i * 100))
                .expect("within the count");
        }
        assert_eq!(
            p.accept(frame(None), ms(600)),
            Err(Violation::TooManyFrames)
        );
        match p.accept(Input::End(Action::Blink), ms(700)) {
            Ok(Step::Ended { action, frames }) => {
                assert_eq!((action, frames.len()), (Action::Blink, 5));
            }
            other => panic!("expected the end of the action, got {other:?}"),
        }
        assert!(p.is_complete());
    }

    #[test]
    fn violations_have_the_documented_close_codes() {
        assert_eq!(Violation::BadMessage("x").close_code(), 1007);
        assert_eq!(Violation::FrameTooLarge.close_code(), 1009);
        assert_eq!(Violation::VendorUnavailable.close_code(), 1011);
        assert_eq!(Violation::ActionTimeout.close_code(), 1008);
        assert_eq!(Violation::ShuttingDown.close_code(), 1001);
    }
}

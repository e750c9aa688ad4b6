//! Topics and topic patterns.
//!
//! A topic is `/`-separated levels, such as `sensors/imu/accel`. A pattern may
//! use `*` for exactly one level and `**` for any number of levels (zero
//! included) — each as a whole level.
//!
//! ```
//! use botbus_core::TopicPattern;
//!
//! let p = TopicPattern::parse("sensors/*/accel").unwrap();
//! assert!(p.matches("sensors/imu/accel"));
//! assert!(!p.matches("sensors/imu/left/accel"));
//! let all = TopicPattern::parse("sensors/**").unwrap();
//! assert!(all.matches("sensors/imu/left/accel"));
//! assert!(all.matches("sensors"));
//! assert!(TopicPattern::parse("sensors/im*").is_err());
//! ```

use std::fmt;

/// Why a topic or pattern is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topic `{input}`: {reason}")]
pub struct TopicError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn check_levels(input: &str, wildcards: bool) -> Result<(), TopicError> {
    let fail = |reason| {
        Err(TopicError {
            input: input.to_owned(),
            reason,
        })
    };
    if input.is_empty() {
        return fail("a topic cannot be empty");
    }
    for level in input.split('/') {
        if level.is_empty() {
            return fail("a topic level cannot be empty (no leading, trailing or double `/`)");
        }
        if level.contains('*') {
            if !wildcards {
                return fail("wildcards belong in subscription patterns, not in published topics");
            }
            if level != "*" && level != "**" {
                return fail("`*` and `**` must stand alone as a whole level");
            }
        }
    }
    Ok(())
}

/// Checks a topic to publish on: non-empty levels, no wildcards.
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    check_levels(topic, false)
}

/// A subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicPattern {
    text: String,
}

impl TopicPattern {
    /// Parses and checks a pattern.
    pub fn parse(pattern: &str) -> Result<Self, TopicError> {
        check_levels(pattern, true)?;
        Ok(Self {
            text: pattern.to_owned(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `topic` matches this pattern. Runs on every publish for
    /// every subscription, so it walks both strings in place: no allocation.
    pub fn matches(&self, topic: &str) -> bool {
        match_levels(Some(&self.text), Some(topic))
    }
}

/// The first level of `levels` and what follows it (`None`: nothing does).
fn first_level(levels: &str) -> (&str, Option<&str>) {
    match levels.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (levels, None),
    }
}

/// Matches what is left of a pattern against what is left of a topic;
/// `None` is "no levels left".
fn match_levels(pattern: Option<&str>, topic: Option<&str>) -> bool {
    let Some(pattern) = pattern else {
        return topic.is_none();
    };
    let (level, pattern_rest) = first_level(pattern);
    if level == "**" {
        // Zero levels, or one more, then try the rest of the pattern again.
        let mut topic = topic;
        loop {
            if match_levels(pattern_rest, topic) {
                return true;
            }
            match topic {
                Some(levels) => topic = first_level(levels).1,
                None => return false,
            }
        }
    }
    match topic {
        Some(topic) => {
            let (topic_level, topic_rest) = first_level(topic);
            (level == "*" || level == topic_level) && match_levels(pattern_rest, topic_rest)
        }
        None => false,
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

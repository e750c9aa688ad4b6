//! An announcement longer than a peer reads in one frame: sent in parts,
//! gathered back.
//!
//! A node announces its own modules and subscriptions and every node it
//! reaches ([`Frame::Announce`]). Towards a peer whose `max_frame` is
//! small, or from a hub reaching many nodes, that may not fit one frame.
//! [`Announcement::into_parts`] cuts it into frames that fit: parts
//! ([`Frame::AnnouncePart`]) and, last, an announce. The receiver's
//! [`Gathering`] joins them back and gives the whole once the announce has
//! come, which then replaces what was announced before, as a single
//! announce does.
//!
//! ```
//! use botbus_core::announce::{Announcement, Gathering};
//! use botbus_core::Frame;
//!
//! let announcement = Announcement {
//!     modules: (0..100).map(|i| format!("camera-{i}")).collect(),
//!     ..Announcement::default()
//! };
//! // Frames of at most 200 bytes of JSON.
//! let parts = announcement.clone().into_parts(|frame| serde_json::to_vec(frame).unwrap().len() <= 200);
//! assert!(parts.left_out.is_empty());
//! assert!(parts.frames.len() > 1);
//!
//! let mut gathering = Gathering::default();
//! let mut whole = None;
//! for frame in parts.frames {
//!     let (part, more) = Announcement::from_frame(frame).expect("an announce or a part of one");
//!     whole = gathering.take(part, more).unwrap();
//! }
//! assert_eq!(whole, Some(announcement));
//! ```

use crate::frame::{Frame, Reach};

/// What a node announces to a peer: the body of a [`Frame::Announce`] (or
/// of the [`Frame::AnnouncePart`]s and the announce it is cut into).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announcement {
    /// The sender's own modules.
    pub modules: Vec<String>,
    /// The topic patterns its own modules subscribe to.
    pub subscriptions: Vec<String>,
    /// The other nodes reachable through it.
    pub reach: Vec<Reach>,
}

/// An [`Announcement`] as the frames that carry it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parts {
    /// The frames, in the order to send them: parts, then one announce.
    pub frames: Vec<Frame>,
    /// What fits in no frame on its own (a name longer than the peer reads,
    /// with what it needs around it), left out, described for a log line.
    pub left_out: Vec<String>,
}

/// One name of an announcement: the unit a part is cut at. Indices into
/// the announcement being cut.
#[derive(Debug, Clone, Copy)]
enum Atom {
    Module(usize),
    Subscription(usize),
    /// A reached node, with no modules or subscriptions yet.
    Node(usize),
    NodeModule(usize, usize),
    NodeSubscription(usize, usize),
}

impl Announcement {
    /// This announcement as one frame.
    pub fn into_frame(self) -> Frame {
        Frame::Announce {
            modules: self.modules,
            subscriptions: self.subscriptions,
            reach: self.reach,
        }
    }

    /// This announcement as a part of a longer one.
    fn into_part_frame(self) -> Frame {
        Frame::AnnouncePart {
            modules: self.modules,
            subscriptions: self.subscriptions,
            reach: self.reach,
        }
    }

    /// What `frame` announces, and whether more is to come (a part), if
    /// it is an announce or a part of one.
    pub fn from_frame(frame: Frame) -> Option<(Announcement, bool)> {
        let more = matches!(frame, Frame::AnnouncePart { .. });
        match frame {
            Frame::Announce {
                modules,
                subscriptions,
                reach,
            }
            | Frame::AnnouncePart {
                modules,
                subscriptions,
                reach,
            } => Some((
                Announcement {
                    modules,
                    subscriptions,
                    reach,
                },
                more,
            )),
            _ => None,
        }
    }

    /// The frames that carry this announcement, each one that `fits`
    /// accepts (a frame the peer reads): one frame if it fits whole, and
    /// otherwise as many as it takes, a reached node's modules and
    /// subscriptions split across frames where they must be (each frame
    /// names the node again). Order is kept. A name that fits in no frame
    /// even alone is left out, and said so in [`Parts::left_out`].
    pub fn into_parts(self, mut fits: impl FnMut(&Frame) -> bool) -> Parts {
        let whole = self.clone().into_frame();
        if fits(&whole) {
            return Parts {
                frames: vec![whole],
                left_out: Vec::new(),
            };
        }
        let atoms = self.atoms();
        let mut frames = Vec::new();
        let mut left_out = Vec::new();
        let mut start = 0;
        while start < atoms.len() {
            // The longest run of atoms from `start` that fits: doubled
            // until one does not, then halved between (a frame only grows
            // with the atoms it holds), so a part costs trials of its own
            // size, not of all that is left. Measured as a part, never the
            // shorter kind (JSON's `"announce_part"` is the longer name; in
            // postcard either kind is one byte), so the last fits too.
            let left = atoms.len() - start;
            let (mut fitting, mut too_many) = (0, left + 1);
            let mut trial = 1;
            while fitting < left {
                if !fits(&self.part(&atoms[start..start + trial]).into_part_frame()) {
                    too_many = trial;
                    break;
                }
                fitting = trial;
                trial = (trial * 2).min(left);
            }
            while too_many - fitting > 1 {
                let mid = fitting + (too_many - fitting) / 2;
                if fits(&self.part(&atoms[start..start + mid]).into_part_frame()) {
                    fitting = mid;
                } else {
                    too_many = mid;
                }
            }
            if fitting == 0 {
                left_out.push(self.describe(atoms[start]));
                start += 1;
                continue;
            }
            frames.push(self.part(&atoms[start..start + fitting]));
            start += fitting;
        }
        let Some(last) = frames.len().checked_sub(1) else {
            // Nothing fits: an empty announce at least says what is gone.
            let frames = vec![Announcement::default().into_frame()];
            return Parts { frames, left_out };
        };
        // The last part ends the announcement: it goes as the announce.
        let frames = frames
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                if i == last {
                    part.into_frame()
                } else {
                    part.into_part_frame()
                }
            })
            .collect();
        Parts { frames, left_out }
    }

    fn atoms(&self) -> Vec<Atom> {
        let mut atoms: Vec<Atom> = (0..self.modules.len()).map(Atom::Module).collect();
        atoms.extend((0..self.subscriptions.len()).map(Atom::Subscription));
        for (node, reach) in self.reach.iter().enumerate() {
            atoms.push(Atom::Node(node));
            atoms.extend((0..reach.modules.len()).map(|m| Atom::NodeModule(node, m)));
            atoms.extend((0..reach.subscriptions.len()).map(|s| Atom::NodeSubscription(node, s)));
        }
        atoms
    }

    /// The part holding `atoms`, a reached node's entry opened wherever
    /// its first atom here is.
    fn part(&self, atoms: &[Atom]) -> Announcement {
        let mut part = Announcement::default();
        let reach_of = |part: &mut Announcement, node: usize| -> usize {
            let fresh = part.reach.last().is_none_or(|last| last.node != self.reach[node].node);
            if fresh {
                // The entry's own names only: its lists are filled atom by
                // atom, and cloning them whole at every trial cut would
                // make cutting a large entry quadratic.
                let reach = &self.reach[node];
                part.reach.push(Reach {
                    node: reach.node.clone(),
                    path: reach.path.clone(),
                    modules: Vec::new(),
                    subscriptions: Vec::new(),
                    json: reach.json,
                });
            }
            part.reach.len() - 1
        };
        for atom in atoms {
            match *atom {
                Atom::Module(m) => part.modules.push(self.modules[m].clone()),
                Atom::Subscription(s) => part.subscriptions.push(self.subscriptions[s].clone()),
                Atom::Node(node) => {
                    reach_of(&mut part, node);
                }
                Atom::NodeModule(node, m) => {
                    let at = reach_of(&mut part, node);
                    part.reach[at].modules.push(self.reach[node].modules[m].clone());
                }
                Atom::NodeSubscription(node, s) => {
                    let at = reach_of(&mut part, node);
                    part.reach[at]
                        .subscriptions
                        .push(self.reach[node].subscriptions[s].clone());
                }
            }
        }
        part
    }

    fn describe(&self, atom: Atom) -> String {
        match atom {
            Atom::Module(m) => format!("module `{}`", self.modules[m]),
            Atom::Subscription(s) => format!("subscription `{}`", self.subscriptions[s]),
            Atom::Node(node) => format!("node `{}`", self.reach[node].node),
            Atom::NodeModule(node, m) => format!(
                "module `{}` of node `{}`",
                self.reach[node].modules[m], self.reach[node].node
            ),
            Atom::NodeSubscription(node, s) => format!(
                "subscription `{}` of node `{}`",
                self.reach[node].subscriptions[s], self.reach[node].node
            ),
        }
    }

    /// The bytes of its names, roughly what it holds.
    fn name_bytes(&self) -> usize {
        let names = |names: &[String]| names.iter().map(String::len).sum::<usize>();
        names(&self.modules)
            + names(&self.subscriptions)
            + self
                .reach
                .iter()
                .map(|r| r.node.len() + names(&r.path) + names(&r.modules) + names(&r.subscriptions))
                .sum::<usize>()
    }

    /// Adds `part` to what was gathered: its names after these, a node's
    /// entry joined with the same node's entry already here.
    fn extend(&mut self, part: Announcement) {
        self.modules.extend(part.modules);
        self.subscriptions.extend(part.subscriptions);
        for reach in part.reach {
            match self.reach.iter_mut().rev().find(|r| r.node == reach.node) {
                Some(gathered) => {
                    gathered.modules.extend(reach.modules);
                    gathered.subscriptions.extend(reach.subscriptions);
                }
                None => self.reach.push(reach),
            }
        }
    }
}

/// The most name bytes a [`Gathering`] holds before its last part: 64 MiB,
/// eight default frames' worth.
pub const MAX_GATHERED: usize = 64 * 1024 * 1024;

/// Why a peer's announcement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an announce in parts grew past {MAX_GATHERED} bytes of names before its last part")]
pub struct TooLarge;

/// The parts of a peer's announcement received so far.
#[derive(Debug, Default)]
pub struct Gathering {
    gathered: Option<Announcement>,
    bytes: usize,
}

impl Gathering {
    /// Takes the next part; `more` says whether more are to come. The whole
    /// announcement once its last part has come (a single announce is its
    /// own last part), `None` while parts are missing. `TooLarge` if the
    /// parts grew past [`MAX_GATHERED`] (they are dropped, and the peer's
    /// last whole announcement stands).
    pub fn take(&mut self, part: Announcement, more: bool) -> Result<Option<Announcement>, TooLarge> {
        if self.gathered.is_none() && !more {
            return Ok(Some(part));
        }
        self.bytes += part.name_bytes();
        if self.bytes > MAX_GATHERED {
            *self = Gathering::default();
            return Err(TooLarge);
        }
        self.gathered.get_or_insert_with(Announcement::default).extend(part);
        if more {
            return Ok(None);
        }
        self.bytes = 0;
        Ok(self.gathered.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_fits(limit: usize) -> impl FnMut(&Frame) -> bool {
        move |frame| serde_json::to_vec(frame).unwrap().len() <= limit
    }

    fn gather(frames: Vec<Frame>) -> Option<Announcement> {
        let mut gathering = Gathering::default();
        let mut whole = None;
        for frame in frames {
            let (part, more) = Announcement::from_frame(frame).expect("an announce or a part of one");
            assert!(whole.is_none(), "a part after the last");
            whole = gathering.take(part, more).unwrap();
        }
        whole
    }

    fn node(name: &str, modules: usize, subscriptions: usize) -> Reach {
        Reach {
            node: name.to_owned(),
            path: vec!["hub".to_owned(), name.to_owned()],
            modules: (0..modules).map(|i| format!("{name}-module-{i}")).collect(),
            subscriptions: (0..subscriptions).map(|i| format!("{name}/topic/{i}")).collect(),
            json: name.ends_with("py"),
        }
    }

    fn big() -> Announcement {
        Announcement {
            modules: (0..40).map(|i| format!("own-{i}")).collect(),
            subscriptions: (0..10).map(|i| format!("sensors/{i}/**")).collect(),
            reach: vec![node("arm", 30, 5), node("empty", 0, 0), node("lidar-py", 50, 20)],
        }
    }

    #[test]
    fn an_announcement_that_fits_is_one_frame() {
        let parts = big().into_parts(json_fits(usize::MAX));
        assert_eq!(parts.frames, vec![big().into_frame()]);
    }

    #[test]
    fn a_long_announcement_goes_in_parts_that_fit_and_gathers_back_whole() {
        let whole = serde_json::to_vec(&big().into_frame()).unwrap().len();
        for limit in [200, 300, 1000, whole - 1] {
            let parts = big().into_parts(json_fits(limit));
            assert!(parts.left_out.is_empty(), "{limit}: {:?}", parts.left_out);
            assert!(parts.frames.len() > 1, "{limit}");
            for (i, frame) in parts.frames.iter().enumerate() {
                assert!(json_fits(limit)(frame), "{limit}: part {i} is too long");
                let last = i + 1 == parts.frames.len();
                assert_eq!(
                    matches!(frame, Frame::Announce { .. }),
                    last,
                    "{limit}: parts, then the announce that ends them"
                );
            }
            assert_eq!(gather(parts.frames), Some(big()), "{limit}");
        }
    }

    #[test]
    fn cutting_a_large_entry_measures_about_as_much_as_it_sends() {
        let announcement = Announcement {
            reach: vec![node("arm", 10_000, 0)],
            ..Announcement::default()
        };
        let whole = serde_json::to_vec(&announcement.clone().into_frame()).unwrap().len();
        let mut measured = 0;
        let parts = announcement.clone().into_parts(|frame| {
            let len = serde_json::to_vec(frame).unwrap().len();
            measured += len;
            len <= 1000
        });
        assert!(parts.frames.len() > 100);
        // Each part is found by a dozen trials no larger than twice
        // itself: about ten times the whole in all, where trials over all
        // that is left would measure half of it again for every part (here
        // some 110 times the whole).
        assert!(measured < 16 * whole, "measured {measured} bytes to cut {whole}");
        assert_eq!(gather(parts.frames), Some(announcement));
    }

    #[test]
    fn a_name_that_fits_no_frame_is_left_out_and_said() {
        let mut announcement = big();
        announcement.modules[3] = "m".repeat(500);
        let parts = announcement.clone().into_parts(json_fits(300));
        assert_eq!(parts.left_out, vec![format!("module `{}`", "m".repeat(500))]);
        announcement.modules.remove(3);
        assert_eq!(gather(parts.frames), Some(announcement));
        // Nothing fits at all: one empty announce still replaces the last.
        let parts = big().into_parts(json_fits(10));
        assert_eq!(parts.frames, vec![Announcement::default().into_frame()]);
    }

    #[test]
    fn parts_without_an_end_are_bounded() {
        let mut gathering = Gathering::default();
        let part = Announcement {
            modules: vec!["m".repeat(1024 * 1024)],
            ..Announcement::default()
        };
        let mut refused = false;
        for _ in 0..=MAX_GATHERED / (1024 * 1024) {
            match gathering.take(part.clone(), true) {
                Ok(gathered) => assert_eq!(gathered, None),
                Err(TooLarge) => refused = true,
            }
        }
        assert!(refused, "64 MiB of parts and no end was not refused");
        // After the refusal, a whole announce is taken as it is.
        assert_eq!(gathering.take(big(), false), Ok(Some(big())));
    }
}

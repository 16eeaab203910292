//! Offsets into a head buffer: how parsed heads point at bytes without copying them.

use std::ops::Range;

/// A `start..end` byte range inside one head buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The span of `part`, which must be a sub-slice of `whole`.
    pub(crate) fn of(whole: &[u8], part: &[u8]) -> Span {
        if part.is_empty() {
            // httparse hands out static empty slices (a missing reason phrase, for one).
            return Span::default();
        }
        let start = part.as_ptr() as usize - whole.as_ptr() as usize;
        debug_assert!(start + part.len() <= whole.len());
        Span { start: start as u32, end: (start + part.len()) as u32 }
    }

    pub fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }

    /// The bytes this span covers in `buf`.
    pub fn get(self, buf: &[u8]) -> &[u8] {
        &buf[self.range()]
    }
}

/// One header field: name and value spans (the value without surrounding whitespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderSpan {
    pub name: Span,
    pub value: Span,
}

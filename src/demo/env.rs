//! The environment: procedurally generated images with a framed target digit among
//! distractors, the question "which digit is in the framed cell?", the zoom-in tool and the
//! scorer. Nothing is downloaded; every image is a pure function of `(seed, split, index)`.
//!
//! An image is 24 x 24 grey pixels: a 3 x 3 grid of 8 x 8 cells. Every cell holds a 3 x 5 digit
//! glyph at a jittered offset, or nothing; the target cell's glyph is surrounded by a one-pixel
//! frame (optionally, some distractor cells get a dashed "decoy" frame). Uniform pixel noise is
//! added. The policy first sees only the *global view*: the image area-averaged down to
//! `global_size x global_size` (15 by default), where a glyph is a blur of a few pixels.
//!
//! The `zoom` tool takes a window's coordinates `(x, y)` in `0..5` (a bounding box on a 4-pixel
//! grid: the 8 x 8 window whose top-left pixel is `(4x, 4y)`) and returns that window at full
//! resolution. Only the window aligned with the target's cell, `(2 cx, 2 cy)`, shows the whole
//! target; any other window shows a distractor, part of a glyph, or nothing: never the answer.
//! Knowing *which cell* holds the target is not enough to act well: the call must also get the
//! box right, as a model's bounding box must.

use axpo_core::rng::Rng;

use super::error::{DemoError, DemoResult};
use super::vocab::{DIGITS, REGIONS};

/// Cells per side.
pub const GRID: usize = 3;
/// Cell side in pixels.
pub const CELL: usize = 8;
/// Image side in pixels.
pub const IMAGE_SIZE: usize = GRID * CELL;
/// Glyph width.
pub const GLYPH_W: usize = 3;
/// Glyph height.
pub const GLYPH_H: usize = 5;

/// 3 x 5 glyphs of the digits 0-9, one row per entry, the most significant of 3 bits on the left.
const FONT: [[u8; GLYPH_H]; DIGITS] = [
    [0b111, 0b101, 0b101, 0b101, 0b111],
    [0b010, 0b110, 0b010, 0b010, 0b111],
    [0b111, 0b001, 0b111, 0b100, 0b111],
    [0b111, 0b001, 0b111, 0b001, 0b111],
    [0b101, 0b101, 0b111, 0b001, 0b001],
    [0b111, 0b100, 0b111, 0b001, 0b111],
    [0b111, 0b100, 0b111, 0b101, 0b111],
    [0b111, 0b001, 0b001, 0b001, 0b001],
    [0b111, 0b101, 0b111, 0b101, 0b111],
    [0b111, 0b101, 0b111, 0b001, 0b111],
];

/// Whether glyph pixel `(x, y)` of digit `d` is ink.
#[must_use]
pub fn glyph_ink(d: u8, x: usize, y: usize) -> bool {
    FONT.get(usize::from(d))
        .and_then(|rows| rows.get(y))
        .is_some_and(|row| x < GLYPH_W && row & (0b100 >> x) != 0)
}

/// The task's knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskConfig {
    /// Side of the global view in pixels (a multiple of 3 in `3..=24`; smaller is blurrier).
    pub global_size: usize,
    /// Amplitude of the uniform pixel noise (`[0, 1]`).
    pub noise: f32,
    /// Probability that a distractor cell is empty (`[0, 1]`).
    pub empty_share: f32,
    /// Number of distractor cells with a dashed decoy frame (`0..=8`).
    pub decoys: usize,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self {
            global_size: 15,
            noise: 0.2,
            empty_share: 0.25,
            decoys: 0,
        }
    }
}

impl TaskConfig {
    /// Checks the knobs.
    ///
    /// # Errors
    /// [`DemoError::Config`] naming the bad knob.
    pub fn validate(&self) -> DemoResult<()> {
        if !(GRID..=IMAGE_SIZE).contains(&self.global_size)
            || !self.global_size.is_multiple_of(GRID)
        {
            return Err(DemoError::Config(format!(
                "global view size must be a multiple of {GRID} in {GRID}..={IMAGE_SIZE}, got {}",
                self.global_size
            )));
        }
        for (name, v) in [("noise", self.noise), ("empty share", self.empty_share)] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(DemoError::Config(format!(
                    "{name} must be in [0, 1], got {v}"
                )));
            }
        }
        if self.decoys > REGIONS - 1 {
            return Err(DemoError::Config(format!(
                "decoys must be at most {}, got {}",
                REGIONS - 1,
                self.decoys
            )));
        }
        Ok(())
    }
}

/// Which pool a question comes from; the pools are disjoint streams of the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Demonstrations for the SFT warm start.
    Sft,
    /// RL training questions.
    Train,
    /// Held-out evaluation questions.
    Eval,
}

impl Split {
    fn code(self) -> u64 {
        match self {
            Self::Sft => 1,
            Self::Train => 2,
            Self::Eval => 3,
        }
    }
}

/// A square grey image, row-major, values in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    side: usize,
    pixels: Vec<f32>,
}

impl Image {
    /// A black image.
    #[must_use]
    pub fn black(side: usize) -> Self {
        Self {
            side,
            pixels: vec![0.0; side * side],
        }
    }

    /// Side length.
    #[must_use]
    pub fn side(&self) -> usize {
        self.side
    }

    /// Pixels, row-major.
    #[must_use]
    pub fn pixels(&self) -> &[f32] {
        &self.pixels
    }

    /// Pixel `(x, y)` (0 outside).
    #[must_use]
    pub fn get(&self, x: usize, y: usize) -> f32 {
        if x < self.side && y < self.side {
            self.pixels[y * self.side + x]
        } else {
            0.0
        }
    }

    fn brighten(&mut self, x: usize, y: usize, v: f32) {
        if x < self.side && y < self.side {
            let p = &mut self.pixels[y * self.side + x];
            *p = p.max(v);
        }
    }

    /// The `side x side` crop whose top-left corner is `(x0, y0)`, at full resolution.
    #[must_use]
    pub fn crop(&self, x0: usize, y0: usize, side: usize) -> Self {
        let mut out = Self::black(side);
        for y in 0..side {
            for x in 0..side {
                out.pixels[y * side + x] = self.get(x0 + x, y0 + y);
            }
        }
        out
    }

    /// Area-averaged resampling to `side x side` (each output pixel is the mean of the input
    /// area it covers, with fractional overlaps weighted).
    #[must_use]
    pub fn downsample(&self, side: usize) -> Self {
        let w = area_weights(self.side, side);
        let mut tmp = vec![0.0f32; side * self.side];
        for (oy, wy) in w.iter().enumerate() {
            for &(iy, a) in wy {
                for x in 0..self.side {
                    tmp[oy * self.side + x] += a * self.pixels[iy * self.side + x];
                }
            }
        }
        let mut out = Self::black(side);
        for oy in 0..side {
            for (ox, wx) in w.iter().enumerate() {
                out.pixels[oy * side + ox] =
                    wx.iter().map(|&(ix, a)| a * tmp[oy * self.side + ix]).sum();
            }
        }
        out
    }
}

/// For each output index, the input indices it covers and their weights (summing to 1).
fn area_weights(from: usize, to: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = from as f64 / to.max(1) as f64;
    (0..to)
        .map(|o| {
            let (lo, hi) = (o as f64 * scale, (o + 1) as f64 * scale);
            let mut v = Vec::new();
            let mut i = lo.floor() as usize;
            while (i as f64) < hi && i < from {
                let overlap = (hi.min((i + 1) as f64) - lo.max(i as f64)).max(0.0);
                if overlap > 0.0 {
                    v.push((i, (overlap / scale) as f32));
                }
                i += 1;
            }
            v
        })
        .collect()
}

/// What a cell holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// Nothing but noise.
    Empty,
    /// A digit glyph.
    Digit(u8),
}

/// A generated question: the image, its global view, the target and what every cell holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// Its pool.
    pub split: Split,
    /// Its index within the pool.
    pub index: u64,
    /// The full-resolution image.
    pub image: Image,
    /// The downsampled global view the policy sees first.
    pub global: Image,
    /// The framed cell (region `0..9`, row-major).
    pub target: u8,
    /// The target digit: the correct answer.
    pub digit: u8,
    /// What each cell holds (the target cell holds `Digit(digit)`).
    pub cells: [Cell; REGIONS],
}

/// Zoom-window positions per axis.
pub const WINDOWS_PER_AXIS: usize = (IMAGE_SIZE - CELL) / ZOOM_STRIDE + 1;
/// Stride of the zoom-window grid in pixels.
pub const ZOOM_STRIDE: usize = 4;

/// A zoom window: the 8 x 8 crop whose top-left pixel is `(4x, 4y)`, `x, y < 5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// Column coordinate.
    pub x: u8,
    /// Row coordinate.
    pub y: u8,
}

impl Window {
    /// The window aligned with a cell.
    #[must_use]
    pub fn of_region(region: u8) -> Self {
        let (x0, y0) = region_origin(region);
        Self {
            x: (x0 / ZOOM_STRIDE) as u8,
            y: (y0 / ZOOM_STRIDE) as u8,
        }
    }

    /// Top-left pixel.
    #[must_use]
    pub fn origin(self) -> (usize, usize) {
        (
            usize::from(self.x) * ZOOM_STRIDE,
            usize::from(self.y) * ZOOM_STRIDE,
        )
    }

    /// The cell it is aligned with, if any.
    #[must_use]
    pub fn region(self) -> Option<u8> {
        let (x0, y0) = self.origin();
        (x0 % CELL == 0 && y0 % CELL == 0 && x0 < IMAGE_SIZE && y0 < IMAGE_SIZE)
            .then(|| ((y0 / CELL) * GRID + x0 / CELL) as u8)
    }
}

/// Top-left pixel of a region.
#[must_use]
pub fn region_origin(region: u8) -> (usize, usize) {
    let r = usize::from(region);
    ((r % GRID) * CELL, (r / GRID) * CELL)
}

fn uniform(rng: &mut Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.next_f64() as f32
}

impl Question {
    /// Generates question `index` of `split` for a run seeded with `seed`.
    #[must_use]
    pub fn generate(config: &TaskConfig, seed: u64, split: Split, index: u64) -> Self {
        let mut rng = Rng::new(seed, (split.code() << 40) ^ index);
        let target = rng.below(REGIONS) as u8;
        let digit = rng.below(DIGITS) as u8;
        let mut cells = [Cell::Empty; REGIONS];
        for (r, cell) in cells.iter_mut().enumerate() {
            *cell = if r == usize::from(target) {
                Cell::Digit(digit)
            } else if rng.next_f64() < f64::from(config.empty_share) {
                Cell::Empty
            } else {
                // A distractor digit, never the target's.
                let d = (usize::from(digit) + 1 + rng.below(DIGITS - 1)) % DIGITS;
                Cell::Digit(d as u8)
            };
        }
        // Decoy frames on distinct distractor cells.
        let mut others: Vec<u8> = (0..REGIONS as u8).filter(|&r| r != target).collect();
        let mut decoys = Vec::new();
        for _ in 0..config.decoys.min(others.len()) {
            decoys.push(others.remove(rng.below(others.len())));
        }
        let mut image = Image::black(IMAGE_SIZE);
        for (r, cell) in cells.iter().enumerate() {
            let (x0, y0) = region_origin(r as u8);
            if r == usize::from(target) || decoys.contains(&(r as u8)) {
                let dashed = r != usize::from(target);
                let v = uniform(&mut rng, 0.6, 0.9);
                for i in 0..CELL {
                    if dashed && i % 2 == 1 {
                        continue;
                    }
                    image.brighten(x0 + i, y0, v);
                    image.brighten(x0 + i, y0 + CELL - 1, v);
                    image.brighten(x0, y0 + i, v);
                    image.brighten(x0 + CELL - 1, y0 + i, v);
                }
            }
            if let Cell::Digit(d) = *cell {
                let ox = 2 + rng.below(2);
                let oy = 1 + rng.below(2);
                let v = uniform(&mut rng, 0.7, 1.0);
                for gy in 0..GLYPH_H {
                    for gx in 0..GLYPH_W {
                        if glyph_ink(d, gx, gy) {
                            image.brighten(x0 + ox + gx, y0 + oy + gy, v);
                        }
                    }
                }
            }
        }
        for p in &mut image.pixels {
            *p = (*p + uniform(&mut rng, -config.noise, config.noise)).clamp(0.0, 1.0);
        }
        let global = image.downsample(config.global_size);
        Self {
            split,
            index,
            image,
            global,
            target,
            digit,
            cells,
        }
    }

    /// The zoom tool: the window's 8 x 8 crop of the image at full resolution (pixels outside
    /// the image are black).
    #[must_use]
    pub fn zoom(&self, window: Window) -> Image {
        let (x0, y0) = window.origin();
        self.image.crop(x0, y0, CELL)
    }

    /// The window that shows the target.
    #[must_use]
    pub fn target_window(&self) -> Window {
        Window::of_region(self.target)
    }

    /// The digit a window shows whole, if it is aligned with a cell holding one.
    #[must_use]
    pub fn window_digit(&self, window: Window) -> Option<u8> {
        match self.cell(window.region()?) {
            Cell::Digit(d) => Some(d),
            Cell::Empty => None,
        }
    }

    /// The binary reward: 1 for the target digit, 0 for anything else or no answer.
    #[must_use]
    pub fn score(&self, answer: Option<u8>) -> f32 {
        if answer == Some(self.digit) { 1.0 } else { 0.0 }
    }

    /// What the cell of `region` holds.
    #[must_use]
    pub fn cell(&self, region: u8) -> Cell {
        self.cells
            .get(usize::from(region))
            .copied()
            .unwrap_or(Cell::Empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(index: u64) -> Question {
        Question::generate(&TaskConfig::default(), 7, Split::Train, index)
    }

    #[test]
    fn zoom_returns_the_window_at_full_resolution() {
        let q = question(3);
        for wy in 0..WINDOWS_PER_AXIS as u8 {
            for wx in 0..WINDOWS_PER_AXIS as u8 {
                let w = Window { x: wx, y: wy };
                let crop = q.zoom(w);
                assert_eq!(crop.side(), CELL);
                let (x0, y0) = w.origin();
                for y in 0..CELL {
                    for x in 0..CELL {
                        assert_eq!(
                            crop.get(x, y),
                            q.image.get(x0 + x, y0 + y),
                            "{w:?} ({x}, {y})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_target_window_shows_the_framed_target_and_others_do_not() {
        let config = TaskConfig {
            noise: 0.0,
            ..TaskConfig::default()
        };
        for i in 0..50 {
            let q = Question::generate(&config, 1, Split::Train, i);
            let crop = q.zoom(q.target_window());
            // The frame: every border pixel is lit (no noise here).
            for k in 0..CELL {
                for (x, y) in [(k, 0), (k, CELL - 1), (0, k), (CELL - 1, k)] {
                    assert!(
                        crop.get(x, y) >= 0.6,
                        "question {i}: frame pixel ({x}, {y})"
                    );
                }
            }
            assert_eq!(q.window_digit(q.target_window()), Some(q.digit));
            assert_eq!(q.cell(q.target), Cell::Digit(q.digit));
            // The glyph's ink is inside: count lit interior pixels.
            let ink = (1..CELL - 1)
                .flat_map(|y| (1..CELL - 1).map(move |x| (x, y)))
                .filter(|&(x, y)| crop.get(x, y) > 0.5)
                .count();
            let glyph = (0..GLYPH_H)
                .flat_map(|y| (0..GLYPH_W).map(move |x| (x, y)))
                .filter(|&(x, y)| glyph_ink(q.digit, x, y))
                .count();
            assert_eq!(ink, glyph, "question {i}");
            // No other window shows the target digit whole.
            for wy in 0..WINDOWS_PER_AXIS as u8 {
                for wx in 0..WINDOWS_PER_AXIS as u8 {
                    let w = Window { x: wx, y: wy };
                    if w != q.target_window() {
                        assert_ne!(q.window_digit(w), Some(q.digit), "question {i} {w:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn windows_align_with_cells_only_on_even_coordinates() {
        for r in 0..REGIONS as u8 {
            let w = Window::of_region(r);
            assert_eq!(w.region(), Some(r));
            assert_eq!(region_origin(r), w.origin());
        }
        assert_eq!(Window { x: 1, y: 0 }.region(), None);
        assert_eq!(Window { x: 4, y: 3 }.region(), None);
        assert_eq!(Window { x: 4, y: 4 }.region(), Some(8));
    }

    #[test]
    fn answers_are_scored_right() {
        for i in 0..20 {
            let q = question(i);
            assert_eq!(q.score(Some(q.digit)), 1.0);
            assert_eq!(q.score(None), 0.0);
            for d in 0..DIGITS as u8 {
                if d != q.digit {
                    assert_eq!(q.score(Some(d)), 0.0);
                }
            }
        }
    }

    #[test]
    fn the_global_view_is_an_area_average() {
        let q = question(5);
        let mean = |img: &Image| img.pixels().iter().sum::<f32>() / img.pixels().len() as f32;
        assert_eq!(q.global.side(), 15);
        assert!((mean(&q.global) - mean(&q.image)).abs() < 1e-4);
        // An integer factor averages blocks exactly.
        let half = q.image.downsample(12);
        let block =
            (q.image.get(2, 4) + q.image.get(3, 4) + q.image.get(2, 5) + q.image.get(3, 5)) / 4.0;
        assert!((half.get(1, 2) - block).abs() < 1e-6);
    }

    #[test]
    fn questions_are_reproducible_and_splits_disjoint() {
        let c = TaskConfig::default();
        assert_eq!(
            Question::generate(&c, 9, Split::Eval, 4),
            Question::generate(&c, 9, Split::Eval, 4)
        );
        let train: Vec<Question> = (0..200)
            .map(|i| Question::generate(&c, 9, Split::Train, i))
            .collect();
        for i in 0..200 {
            let e = Question::generate(&c, 9, Split::Eval, i);
            assert!(train.iter().all(|t| t.image != e.image), "eval {i} repeats");
        }
        assert_ne!(
            Question::generate(&c, 9, Split::Train, 0).image,
            Question::generate(&c, 10, Split::Train, 0).image
        );
    }

    #[test]
    fn bad_task_knobs_are_rejected() {
        let ok = TaskConfig::default();
        assert!(ok.validate().is_ok());
        for bad in [
            TaskConfig {
                global_size: 10,
                ..ok
            },
            TaskConfig {
                global_size: 27,
                ..ok
            },
            TaskConfig { noise: 1.5, ..ok },
            TaskConfig {
                empty_share: f32::NAN,
                ..ok
            },
            TaskConfig { decoys: 9, ..ok },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn decoy_frames_are_dashed() {
        let c = TaskConfig {
            noise: 0.0,
            decoys: 2,
            ..TaskConfig::default()
        };
        let q = Question::generate(&c, 3, Split::Train, 0);
        let framed: Vec<u8> = (0..REGIONS as u8)
            .filter(|&r| {
                let (x0, y0) = region_origin(r);
                q.image.get(x0, y0) > 0.5
            })
            .collect();
        assert_eq!(framed.len(), 3);
        assert!(framed.contains(&q.target));
        for r in framed {
            let (x0, y0) = region_origin(r);
            assert_eq!(q.image.get(x0 + 1, y0) > 0.5, r == q.target, "cell {r}");
        }
    }
}

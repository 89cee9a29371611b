//! Image preprocessing against the Hugging Face processor: smart_resize grids, patch layout and
//! normalisation exactly; PIL bicubic resizing within one 8-bit step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axpo_model_qwen3vl::parity::{fixtures_dir, load_case};
use axpo_model_qwen3vl::preprocess::{ImageProcessorConfig, RgbImage, preprocess};
use axpo_model_qwen3vl::{Grid, SafetensorsStore};
use common::{max_abs, model_dir};

/// One 8-bit step after normalisation: (x / 255 - 0.5) / 0.5 moves by 2/255.
const ONE_LSB: f32 = 2.0 / 255.0;

fn image(store: &SafetensorsStore, name: &str) -> RgbImage {
    let (shape, data) = store.u8_tensor(name).unwrap();
    RgbImage::new(shape[1], shape[0], data).unwrap()
}

#[test]
fn fixture_images_patchify_exactly_like_the_processor() {
    for (variant, case) in [("a", "image1"), ("b", "image2")] {
        let c = load_case(&model_dir(variant), case).unwrap();
        let want = c.input.images.clone().unwrap();
        let imgs: Vec<RgbImage> = (0..want.grids.len())
            .map(|k| image(&c.inputs, &format!("images_u8_{k}")))
            .collect();
        let cfg = ImageProcessorConfig::default().with_pixels(1024, 1 << 24);
        let got = preprocess(&imgs, &cfg).unwrap();
        assert_eq!(got.grids, want.grids);
        assert!(max_abs(&got.pixel_values, &want.pixel_values) <= 1e-6);
    }
}

#[test]
fn resized_images_match_the_processor() {
    let store =
        SafetensorsStore::open_files(&[fixtures_dir().join("preprocess.safetensors")]).unwrap();
    for name in ["up", "down", "exact"] {
        let img = image(&store, &format!("{name}.image_u8"));
        let (_, mm) = store.int_tensor(&format!("{name}.min_max_pixels")).unwrap();
        let cfg = ImageProcessorConfig::default().with_pixels(mm[0] as usize, mm[1] as usize);
        let got = preprocess(std::slice::from_ref(&img), &cfg).unwrap();
        let (_, g) = store.int_tensor(&format!("{name}.image_grid_thw")).unwrap();
        assert_eq!(
            got.grids,
            vec![Grid {
                t: g[0] as usize,
                h: g[1] as usize,
                w: g[2] as usize
            }],
            "{name}"
        );
        let (_, want) = store.f32_tensor(&format!("{name}.pixel_values")).unwrap();
        let d = max_abs(&got.pixel_values, &want);
        let off = got
            .pixel_values
            .iter()
            .zip(&want)
            .filter(|(a, b)| (*a - *b).abs() > 1e-6)
            .count();
        eprintln!(
            "{name}: grid {g:?}, max diff {d:e}, {off} of {} values differ",
            want.len()
        );
        assert!(d <= ONE_LSB + 1e-6, "{name}: {d}");
        assert!(off * 100 <= want.len(), "{name}: {off} values differ");
    }
}

#[test]
fn malformed_images_are_typed_errors() {
    assert!(RgbImage::new(2, 2, vec![0; 11]).is_err());
    assert!(RgbImage::new(0, 2, vec![]).is_err());
    let thin = RgbImage::new(1000, 2, vec![0; 6000]).unwrap();
    assert!(preprocess(&[thin], &ImageProcessorConfig::default()).is_err());
    assert!(RgbImage::open(&fixtures_dir().join("qwen3vl-tiny-a/config.json")).is_err());
}

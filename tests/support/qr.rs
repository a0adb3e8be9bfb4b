//! Reads QR codes back out of a PNG (a [`crate::browser::Browser`] screenshot), so a test checks
//! what a phone's camera would get from the page, not the markup that drew it.

use std::path::Path;

/// The text of every QR code found in the PNG at `path` (empty if none), in the order found.
/// Panics if the file is not a readable PNG; a code that is found but does not decode is
/// left out, so compare the result with what the page should show.
pub fn decode_png(path: &Path) -> Vec<String> {
    let image = image::open(path)
        .unwrap_or_else(|e| panic!("read PNG {}: {e}", path.display()))
        .to_luma8();
    let (width, height) = image.dimensions();
    let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(
        usize::try_from(width).expect("width"),
        usize::try_from(height).expect("height"),
        |x, y| image.get_pixel(x as u32, y as u32).0[0],
    );
    prepared
        .detect_grids()
        .into_iter()
        .filter_map(|grid| grid.decode().ok().map(|(_, text)| text))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::decode_png;

    /// A code drawn 4 px per module with the 4-module quiet zone decodes to its text.
    #[test]
    fn decodes_a_rendered_code() {
        let text = "http://127.0.0.1:8080/provisioning/2001.xml";
        let code = qrcode::QrCode::new(text.as_bytes()).expect("encode");
        let (modules, scale, quiet) = (code.width() as u32, 4, 4);
        let side = (modules + 2 * quiet) * scale;
        let colors = code.to_colors();
        let png = image::GrayImage::from_fn(side, side, |x, y| {
            let (mx, my) = (
                (x / scale).wrapping_sub(quiet),
                (y / scale).wrapping_sub(quiet),
            );
            let dark = mx < modules
                && my < modules
                && colors[(my * modules + mx) as usize] == qrcode::Color::Dark;
            image::Luma([if dark { 0 } else { 255 }])
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("code.png");
        png.save(&path).expect("write PNG");
        assert_eq!(decode_png(&path), vec![text.to_string()]);
    }
}

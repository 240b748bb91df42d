//! The freestanding guest images built with hv-host (by `build.rs`, from
//! the `images/` workspace): where they are on disk.

use std::path::{Path, PathBuf};

/// Directory holding the built images (`images/target/release`), fixed at
/// build time.
pub const IMAGES_DIR: &str = env!("HV_IMAGES_DIR");

/// Names of the sandbox guest images `build.rs` builds.
pub const GUEST_IMAGES: &[&str] = &["demo", "minimal"];

/// Why an image could not be found.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The name is not a plain file name (empty, or with a path separator
    /// or `..`).
    #[error("{name:?} is not an image name")]
    InvalidName {
        /// The name asked for.
        name: String,
    },
    /// No image of this name was built.
    #[error("image {name:?} not found at {}: is it a member of images/Cargo.toml?", path.display())]
    NotFound {
        /// The name asked for.
        name: String,
        /// Where it would be.
        path: PathBuf,
    },
}

/// The directory holding the built images.
pub fn images_dir() -> &'static Path {
    Path::new(IMAGES_DIR)
}

/// The path of the image `name` (e.g. `"demo"`, `"minimal"`), checked to
/// exist.
///
/// # Errors
///
/// [`ImageError::InvalidName`] for names that are not plain file names,
/// [`ImageError::NotFound`] when the file does not exist.
pub fn image(name: &str) -> Result<PathBuf, ImageError> {
    let plain =
        !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
    if !plain {
        return Err(ImageError::InvalidName {
            name: name.to_owned(),
        });
    }
    let path = images_dir().join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ImageError::NotFound {
            name: name.to_owned(),
            path,
        })
    }
}

/// The demo guest (`images/guests/demo`): the functions `hv demo`, the
/// sandbox tests and benchmarks call. Not checked for existence: the build
/// script fails the build when it is not built.
pub fn demo_guest() -> PathBuf {
    images_dir().join("demo")
}

/// The smallest guest (`images/guests/minimal`: one `nop` function).
pub fn minimal_guest() -> PathBuf {
    images_dir().join("minimal")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_images_exist() {
        for name in GUEST_IMAGES {
            let path = image(name).unwrap();
            assert!(path.starts_with(images_dir()));
        }
        assert!(demo_guest().is_file());
        assert!(minimal_guest().is_file());
    }

    #[test]
    fn path_like_names_are_rejected() {
        for name in ["", ".", "..", "../demo", "a/b", "nul\0"] {
            assert!(
                matches!(image(name), Err(ImageError::InvalidName { .. })),
                "{name:?}"
            );
        }
        assert!(matches!(
            image("no-such-image"),
            Err(ImageError::NotFound { .. })
        ));
    }
}

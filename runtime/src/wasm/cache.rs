//! Compiled components on disk, so a restart does not compile again.
//!
//! An entry is named by the SHA-256 of the component and a hash of the
//! engine's compilation settings, so a change to either misses the cache
//! rather than loading incompatible code.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use wasmtime::Engine;
use wasmtime::component::Component;

#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    pub fn new(dir: PathBuf) -> Self {
        ArtifactCache { dir }
    }

    fn path(&self, engine: &Engine, digest: &str) -> PathBuf {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir
            .join(format!("{digest}-{:016x}.cwasm", hasher.finish()))
    }

    /// Loads the compiled form of `wasm`, compiling and storing it on a miss.
    /// Returns the component and whether it came from the cache.
    pub fn load(
        &self,
        engine: &Engine,
        digest: &str,
        wasm: &[u8],
    ) -> wasmtime::Result<(Component, bool)> {
        let path = self.path(engine, digest);
        if path.is_file() {
            // SAFETY: the file was written by `precompile_component` below, in
            // a directory that only weir writes; its name binds it to these
            // exact wasm bytes and engine settings.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable compiled plugin")
                }
            }
        }
        let compiled = engine.precompile_component(wasm)?;
        if let Err(e) = self.store(&path, &compiled) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot cache compiled plugin");
        }
        // SAFETY: `compiled` was produced by this engine just above.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        Ok((component, false))
    }

    fn store(&self, path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        // Write then rename: a concurrent reader never sees a partial file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }
}

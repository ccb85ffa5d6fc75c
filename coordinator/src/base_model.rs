//! The run's base model in the blob store: storing a GGUF file or a Hugging Face directory at
//! `init`, and finding it (verified) again when the coordinator, `demo` or `export` loads it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use hearth_proto::{BaseModel, ContentId, ModelFile, ModelSource};

use crate::store::BlobStore;

/// Files of a Hugging Face directory a run needs besides the safetensors weights.
const DIR_FILES: [&str; 2] = ["config.json", "tokenizer.json"];
/// Optional files of a directory (chat template, EOS token; the shard index).
const DIR_OPTIONAL: [&str; 2] = ["tokenizer_config.json", "model.safetensors.index.json"];

/// A model stored in the blob store, as the run spec names it.
#[derive(Debug, Clone)]
pub struct StoredModel {
    /// GGUF file or directory.
    pub source: ModelSource,
    /// The file's blake3, or the directory's [`BaseModel::manifest_id`].
    pub blake3: ContentId,
    /// Bytes of the file or of all the directory's files.
    pub size_bytes: u64,
    /// The directory's files (empty for a GGUF file).
    pub files: Vec<ModelFile>,
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Stores `path` (a GGUF file or a Hugging Face directory) in `store`, file by file.
pub fn store_model(store: &BlobStore, path: &Path) -> Result<StoredModel> {
    if path.is_file() {
        let size_bytes = std::fs::metadata(path)?.len();
        let blake3 = store
            .put_file(path)
            .with_context(|| format!("storing {}", path.display()))?;
        return Ok(StoredModel {
            source: ModelSource::Gguf {
                file_name: file_name(path),
            },
            blake3,
            size_bytes,
            files: Vec::new(),
        });
    }
    if !path.is_dir() {
        return Err(anyhow!(
            "model {} is neither a GGUF file nor a directory",
            path.display()
        ));
    }
    let mut paths: Vec<PathBuf> = DIR_FILES.iter().map(|n| path.join(n)).collect();
    paths.extend(
        DIR_OPTIONAL
            .iter()
            .map(|n| path.join(n))
            .filter(|p| p.is_file()),
    );
    paths.extend(hearth_model::hf::safetensors_files(path)?);
    let mut files = Vec::with_capacity(paths.len());
    for p in paths {
        let blake3 = store
            .put_file(&p)
            .with_context(|| format!("storing {}", p.display()))?;
        files.push(ModelFile {
            name: file_name(&p),
            blake3,
            size_bytes: std::fs::metadata(&p)?.len(),
        });
    }
    Ok(StoredModel {
        source: ModelSource::Safetensors {
            dir_name: file_name(path),
        },
        blake3: BaseModel::manifest_id(&files),
        size_bytes: files.iter().map(|f| f.size_bytes).sum(),
        files,
    })
}

/// Where the run's base model is on this machine, every blob verified: `None` for a preset, the
/// GGUF blob, or `data_dir/models/<id>/` holding the directory's files (hard links to the blobs,
/// or copies where links fail).
pub fn base_model_path(
    store: &BlobStore,
    base: &BaseModel,
    data_dir: &Path,
) -> Result<Option<PathBuf>> {
    let Some(cid) = base.blake3 else {
        return Ok(None);
    };
    match &base.source {
        ModelSource::Preset { .. } => Ok(None),
        ModelSource::Gguf { .. } => {
            store
                .verify(&cid)
                .with_context(|| format!("base model blob {cid}"))?;
            Ok(Some(store.path(&cid)))
        }
        ModelSource::Safetensors { .. } => {
            let dir = data_dir.join("models").join(cid.to_hex());
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for f in &base.files {
                if !ModelFile::plain_name(&f.name) {
                    return Err(anyhow!("model file name {:?} is not a plain name", f.name));
                }
                store
                    .verify(&f.blake3)
                    .with_context(|| format!("base model file {} ({})", f.name, f.blake3))?;
                let dest = dir.join(&f.name);
                if dest.is_file() {
                    continue;
                }
                let src = store.path(&f.blake3);
                if std::fs::hard_link(&src, &dest).is_err() {
                    crate::store::write_atomic(&dest, &std::fs::read(&src)?)?;
                }
            }
            Ok(Some(dir))
        }
    }
}

"""The user's images, as a run sees them: datasets and their splits (`datasets`), the files of a
class-folder tree (`imagefiles`), where they come from (`sources`), what is wrong with them
(`checks`), transforms, decoding once (`decoded`) and the batches a training loop iterates
(`batches`, `device_batches`)."""

//! Google Cloud Storage. (In progress.)

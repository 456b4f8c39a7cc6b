//! Search over bundle metadata. So far: the index document, built exactly as the
//! original DSS built it (`dss/index/es/document.py`), which both search engines and
//! the subscription matcher will consume.

pub mod document;

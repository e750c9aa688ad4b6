//! botbus

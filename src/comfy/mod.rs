//! comfy stage (placeholder).

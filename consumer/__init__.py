"""The KeyBlend worker and the library it calls: catalog, text, encoder, matcher."""

"""The blinded human study of the paper (section 6.1): sampling, storage, statistics."""

"""End-to-end encryption over vodozemac, sans-I/O.

Small modules with one job each: `keys` (passphrase KDF, sub-keys, AEAD), `identity`
(the account identity key and device lists), `device` (a device's Olm account),
`olm` (encrypting and decrypting 1:1 content), `replay` (the pre-key replay cache)
and `store` (the storage Protocol). Nothing here touches files, sockets or clocks.
"""

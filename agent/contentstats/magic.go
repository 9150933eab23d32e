package contentstats

import (
	"bytes"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Detect recognises the content type from the first bytes of a file. Content
// without a known signature is MagicText when it looks like text (no NUL,
// almost no control characters, mostly printable or valid UTF-8) and
// MagicUnknown otherwise (encrypted and random data land here).
func Detect(b []byte) event.Magic {
	if len(b) == 0 {
		return event.MagicEmpty
	}
	has := func(off int, sig string) bool {
		return len(b) >= off+len(sig) && string(b[off:off+len(sig)]) == sig
	}
	switch {
	case has(0, "\x7fELF"):
		return event.MagicELF
	case has(0, "MZ"):
		return event.MagicPE
	case has(0, "\xfe\xed\xfa\xce"), has(0, "\xfe\xed\xfa\xcf"), has(0, "\xce\xfa\xed\xfe"), has(0, "\xcf\xfa\xed\xfe"):
		return event.MagicMachO
	case has(0, "\xca\xfe\xba\xbe"):
		return event.MagicClass
	case has(0, "#!"):
		return event.MagicScript
	case has(0, "\x1f\x8b"):
		return event.MagicGzip
	case has(0, "PK\x03\x04"), has(0, "PK\x05\x06"), has(0, "PK\x07\x08"):
		return event.MagicZip
	case has(0, "%PDF-"):
		return event.MagicPDF
	case has(0, "\x89PNG\r\n\x1a\n"):
		return event.MagicPNG
	case has(0, "\xff\xd8\xff"):
		return event.MagicJPEG
	case has(0, "GIF87a"), has(0, "GIF89a"):
		return event.MagicGIF
	case has(0, "BZh"):
		return event.MagicBzip2
	case has(0, "\xfd7zXZ\x00"):
		return event.MagicXZ
	case has(0, "\x28\xb5\x2f\xfd"):
		return event.MagicZstd
	case has(0, "7z\xbc\xaf\x27\x1c"):
		return event.Magic7z
	case has(0, "Rar!\x1a\x07"):
		return event.MagicRar
	case has(0, "\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
		return event.MagicOLE
	case has(0, "SQLite format 3\x00"):
		return event.MagicSQLite
	case has(0, "\x00asm"):
		return event.MagicWasm
	case has(257, "ustar"):
		return event.MagicTar
	case has(0, "{\\rtf"):
		return event.MagicRTF
	case has(4, "ftyp"):
		return event.MagicMP4
	case has(0, "RIFF") && has(8, "WEBP"):
		return event.MagicWebP
	case has(0, "OggS"):
		return event.MagicOgg
	case has(0, "ID3"), len(b) >= 2 && b[0] == 0xff && (b[1] == 0xfb || b[1] == 0xf3 || b[1] == 0xf2):
		return event.MagicMP3
	case has(0, "PACK\x00\x00\x00\x02"), has(0, "PACK\x00\x00\x00\x03"):
		return event.MagicGitPack
	case has(0, "\xfftOc\x00\x00\x00\x02"):
		return event.MagicGitIndex
	case isZlib(b):
		return event.MagicZlib
	case isDER(b):
		return event.MagicDER
	}
	if !looksText(b) {
		return event.MagicUnknown
	}
	t := bytes.TrimLeft(b, "\xef\xbb\xbf \t\r\n")
	if len(t) > 64 {
		t = t[:64]
	}
	lt := bytes.ToLower(t)
	switch {
	case bytes.HasPrefix(lt, []byte("<?xml")), bytes.HasPrefix(lt, []byte("<svg")):
		return event.MagicXML
	case bytes.HasPrefix(lt, []byte("<!doctype html")), bytes.HasPrefix(lt, []byte("<html")):
		return event.MagicHTML
	}
	return event.MagicText
}

// isZlib reports whether b starts a zlib stream (RFC 1950) as zlib writes
// it: deflate with a 32 KiB window (0x78), no preset dictionary, one of the
// four compression-level flags (so the header checksum holds), followed by a
// deflate block header whose type is not the reserved 3. Git's loose objects
// are such streams. Text that starts with "x^" and happens to continue with
// a valid block type is read as text: the stream must not look like text.
func isZlib(b []byte) bool {
	if len(b) < 8 || b[0] != 0x78 {
		return false
	}
	switch b[1] {
	case 0x01, 0x5e, 0x9c, 0xda:
	default:
		return false
	}
	return (b[2]>>1)&3 != 3 && !looksText(b)
}

// isDER reports whether b starts the way certificates, keys and CRLs in
// ASN.1 DER do: a SEQUENCE with a long-form length (1-3 length bytes, as
// every such object over 127 bytes has), whose first element is a
// SEQUENCE (X.509 tbsCertificate, CRL, PKCS#12 and PKCS#7 content) or an
// INTEGER (a PKCS#1 or PKCS#8 key's version) with a valid length byte.
func isDER(b []byte) bool {
	if len(b) < 8 || b[0] != 0x30 || b[1] < 0x81 || b[1] > 0x83 {
		return false
	}
	i := 2 + int(b[1]&0x7f)
	if b[2] == 0 { // a minimal encoding has no leading zero length byte
		return false
	}
	switch b[i] {
	case 0x30:
		return b[i+1] >= 0x81 && b[i+1] <= 0x83 || b[i+1] < 0x80 && b[i+1] > 0
	case 0x02:
		return b[i+1] >= 1 && b[i+1] <= 4
	}
	return false
}

// looksText reports whether the first KiB of b is text: no NUL, at most 1%
// other control characters, and either valid UTF-8 or at least 70% printable
// ASCII (legacy 8-bit encodings).
func looksText(b []byte) bool {
	if len(b) > 1024 {
		b = b[:1024]
		// Do not let a rune cut at the boundary spoil UTF-8 validity.
		for i := 0; i < 3 && len(b) > 0 && !utf8.RuneStart(b[len(b)-1]); i++ {
			b = b[:len(b)-1]
		}
		if len(b) > 0 && b[len(b)-1] >= 0xc0 {
			b = b[:len(b)-1]
		}
	}
	ctrl, pr := 0, 0
	for _, c := range b {
		switch {
		case c == 0:
			return false
		case printable[c]:
			pr++
		case c < 0x20 && c != '\f' && c != '\v' && c != 0x1b, c == 0x7f:
			ctrl++
		}
	}
	if ctrl*100 > len(b) {
		return false
	}
	return utf8.Valid(b) || pr*10 >= len(b)*7
}

var extTypes = map[string]event.Magic{}

func init() {
	add := func(m event.Magic, exts ...string) {
		for _, e := range exts {
			extTypes[e] = m
		}
	}
	add(event.MagicText, "txt", "md", "rst", "csv", "tsv", "log", "json", "yaml", "yml", "toml", "ini", "cfg",
		"conf", "c", "h", "cc", "cpp", "hpp", "go", "rs", "java", "kt", "cs", "js", "mjs", "ts", "tsx", "jsx",
		"css", "scss", "less", "php", "sql", "tex", "mk", "cmake", "am", "in", "s", "asm", "vue", "properties",
		"service", "env", "gitignore", "diff", "patch", "po", "m4", "ac", "lock", "mod", "sum")
	add(event.MagicScript, "sh", "bash", "zsh", "py", "pl", "rb", "lua", "ps1", "bat", "cmd", "awk", "tcl")
	add(event.MagicHTML, "html", "htm", "xhtml")
	add(event.MagicXML, "xml", "svg", "xsd", "xsl", "plist", "rss", "atom")
	add(event.MagicPE, "exe", "dll", "sys", "scr", "ocx", "cpl", "efi")
	add(event.MagicELF, "so", "o", "ko", "elf")
	add(event.MagicZip, "zip", "docx", "xlsx", "pptx", "odt", "ods", "odp", "jar", "war", "apk", "epub", "whl", "nupkg", "xpi", "vsix")
	add(event.MagicPDF, "pdf")
	add(event.MagicPNG, "png")
	add(event.MagicJPEG, "jpg", "jpeg", "jpe")
	add(event.MagicGIF, "gif")
	add(event.MagicGzip, "gz", "tgz")
	add(event.MagicBzip2, "bz2", "tbz2")
	add(event.MagicXZ, "xz", "txz")
	add(event.MagicZstd, "zst")
	add(event.Magic7z, "7z")
	add(event.MagicRar, "rar")
	add(event.MagicTar, "tar")
	add(event.MagicOLE, "doc", "xls", "ppt", "msi")
	add(event.MagicSQLite, "sqlite", "sqlite3")
	add(event.MagicWasm, "wasm")
	add(event.MagicClass, "class")
	add(event.MagicRTF, "rtf")
	add(event.MagicMP4, "mp4", "m4a", "m4v", "mov")
	add(event.MagicWebP, "webp")
	add(event.MagicOgg, "ogg", "oga", "ogv", "opus")
	add(event.MagicMP3, "mp3")
}

// Ext returns the lower-case extension of name without the dot ("" if none;
// a leading dot alone, as in ".bashrc", is not an extension).
func Ext(name string) string {
	base := path.Base(name)
	i := strings.LastIndexByte(base, '.')
	if i <= 0 || i == len(base)-1 {
		return ""
	}
	e := base[i+1:]
	if len(e) > 16 {
		return ""
	}
	for j := 0; j < len(e); j++ {
		if e[j] >= 'A' && e[j] <= 'Z' {
			return strings.ToLower(e)
		}
	}
	return e
}

// ExtMagic returns the content type that name's extension promises, or
// MagicUnknown when the extension is absent or makes no promise.
func ExtMagic(name string) event.Magic {
	e := Ext(name)
	if e == "" {
		return event.MagicUnknown
	}
	return extTypes[e]
}

// LinkerScript reports whether text content is a GNU ld script, what glibc,
// ncurses and other packages install under a shared library's name (libc.so,
// libm.so, libncurses.so): not an ELF file, and no contradiction of its .so
// extension. It looks at the first statement after leading comments.
func LinkerScript(b []byte) bool {
	if len(b) > 1024 {
		b = b[:1024]
	}
	for {
		b = bytes.TrimLeft(b, " \t\r\n")
		if !bytes.HasPrefix(b, []byte("/*")) {
			break
		}
		end := bytes.Index(b[2:], []byte("*/"))
		if end < 0 {
			return false
		}
		b = b[2+end+2:]
	}
	for _, kw := range []string{"INPUT", "GROUP", "OUTPUT_FORMAT", "SEARCH_DIR", "AS_NEEDED"} {
		if rest, ok := bytes.CutPrefix(b, []byte(kw)); ok {
			if rest = bytes.TrimLeft(rest, " \t"); len(rest) > 0 && rest[0] == '(' {
				return true
			}
		}
	}
	return false
}

// Mismatch reports whether content of type got contradicts the extension's
// promise want. No promise, and empty files, never mismatch; text-like
// extensions accept any text-like content; "doc" may hold RTF.
func Mismatch(got, want event.Magic) bool {
	if want == event.MagicUnknown || got == event.MagicEmpty || got == want {
		return false
	}
	textual := func(m event.Magic) bool {
		switch m {
		case event.MagicText, event.MagicScript, event.MagicHTML, event.MagicXML:
			return true
		}
		return false
	}
	if textual(want) && textual(got) {
		return false
	}
	if want == event.MagicOLE && got == event.MagicRTF {
		return false
	}
	if want == event.MagicMachO && got == event.MagicClass {
		return false
	}
	return true
}

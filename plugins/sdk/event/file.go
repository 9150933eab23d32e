package event

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// FileLayoutVersion is the version of the File batch encoding.
//
// History:
//   - 1: batch = "VGF" + version byte + u32 count, then count records, each a
//     u32 body length followed by the body: a 76-byte fixed part (see File)
//     and three u16-length-prefixed strings Root, Path, OldPath.
const FileLayoutVersion = 1

// MaxPathLen bounds every path (Root, Path, OldPath) in a File record, in
// bytes. It is Linux's PATH_MAX; the watcher drops (and counts) longer names.
const MaxPathLen = 4096

// fileFixedSize is the size of the fixed part of a version 1 record body.
const fileFixedSize = 76

// fileMinRecord is the smallest encoded record: length prefix, fixed part and
// three empty strings.
const fileMinRecord = 4 + fileFixedSize + 6

// fileBatchHeader is the size of the batch header.
const fileBatchHeader = 8

// MaxFileBatch bounds the number of records in one decoded batch.
const MaxFileBatch = 1 << 16

// FileOp is the operation a File event reports.
type FileOp uint8

// File operations. A rename carries the new name in Path and, where the
// watcher could pair the two halves of the move, the old one in OldPath. A file
// moved out of the watched tree is a FileRename with OldPath set and Path
// empty; a file moved in from outside is a FileCreate.
const (
	FileCreate FileOp = 1 + iota
	FileWrite
	FileRename
	FileRemove
	FileChmod
	fileOpEnd
)

// String returns the operation's lower-case name.
func (o FileOp) String() string {
	switch o {
	case FileCreate:
		return "create"
	case FileWrite:
		return "write"
	case FileRename:
		return "rename"
	case FileRemove:
		return "remove"
	case FileChmod:
		return "chmod"
	default:
		return fmt.Sprintf("op(%d)", uint8(o))
	}
}

// File flag bits (File.Flags).
const (
	FileFlagDir           uint16 = 1 << 0  // the path is a directory
	FileFlagSymlink       uint16 = 1 << 1  // the path is a symbolic link (never followed, never sampled)
	FileFlagNotRegular    uint16 = 1 << 2  // device, FIFO, socket: not sampled
	FileFlagSampled       uint16 = 1 << 3  // content statistics are valid
	FileFlagHeadTail      uint16 = 1 << 4  // the file was larger than the sample: head and tail were read
	FileFlagVanished      uint16 = 1 << 5  // the file disappeared before or while it was read
	FileFlagDenied        uint16 = 1 << 6  // permission denied while sampling
	FileFlagRescan        uint16 = 1 << 7  // reported by a rescan after an event-queue overflow
	FileFlagMagicMismatch uint16 = 1 << 8  // the content type contradicts the extension
	FileFlagExecutable    uint16 = 1 << 9  // any execute permission bit is set
	FileFlagExecParsed    uint16 = 1 << 10 // Exec facts are valid (ELF or PE header parsed)
	FileFlagExecBroken    uint16 = 1 << 11 // ELF/PE magic but the headers did not parse (or the parser panicked)
)

// Exec flag bits (File.ExecFlags).
const (
	ExecELF           uint8 = 1 << 0
	ExecPE            uint8 = 1 << 1
	ExecWX            uint8 = 1 << 2 // a section or segment is both writable and executable
	ExecEntryOutside  uint8 = 1 << 3 // the entry point is not inside an executable section
	ExecNoSymbols     uint8 = 1 << 4 // stripped: no symbol table
	ExecSampledPartly uint8 = 1 << 5 // section entropy was computed on a bounded prefix of some sections
)

// Magic is a content type recognised from a file's first bytes (or, in
// File.ExtMagic, the type its extension promises).
type Magic uint8

// Content types. MagicText is "no signature, mostly printable"; MagicUnknown
// is "no signature and not text" (encrypted or random data look like this).
const (
	MagicUnknown Magic = iota
	MagicEmpty
	MagicText
	MagicELF
	MagicPE
	MagicMachO
	MagicScript // "#!" shebang
	MagicGzip
	MagicZip
	MagicPDF
	MagicPNG
	MagicJPEG
	MagicGIF
	MagicBzip2
	MagicXZ
	MagicZstd
	Magic7z
	MagicRar
	MagicOLE // MS compound document (doc, xls, msi)
	MagicSQLite
	MagicWasm
	MagicClass // Java class file (0xCAFEBABE, shared with Mach-O fat binaries)
	MagicTar
	MagicHTML
	MagicXML
	MagicRTF
	MagicMP4
	MagicWebP
	MagicOgg
	MagicMP3
	MagicZlib     // a zlib stream (RFC 1950): git's loose objects
	MagicDER      // ASN.1 DER: X.509 certificates and CRLs, PKCS#1/#8 keys, PKCS#7/#12 containers
	MagicGitPack  // a git pack file: zlib-compressed objects
	MagicGitIndex // a git pack index (.idx): tables of object hashes
	MagicEnd      // number of content types; values at or above it are unknown to this version
)

var magicNames = [...]string{
	MagicUnknown: "unknown", MagicEmpty: "empty", MagicText: "text", MagicELF: "elf", MagicPE: "pe",
	MagicMachO: "macho", MagicScript: "script", MagicGzip: "gzip", MagicZip: "zip", MagicPDF: "pdf",
	MagicPNG: "png", MagicJPEG: "jpeg", MagicGIF: "gif", MagicBzip2: "bzip2", MagicXZ: "xz",
	MagicZstd: "zstd", Magic7z: "7z", MagicRar: "rar", MagicOLE: "ole", MagicSQLite: "sqlite",
	MagicWasm: "wasm", MagicClass: "class", MagicTar: "tar", MagicHTML: "html", MagicXML: "xml",
	MagicRTF: "rtf", MagicMP4: "mp4", MagicWebP: "webp", MagicOgg: "ogg", MagicMP3: "mp3",
	MagicZlib: "zlib", MagicDER: "der", MagicGitPack: "gitpack", MagicGitIndex: "gitindex",
}

// String returns the content type's short name.
func (m Magic) String() string {
	if int(m) < len(magicNames) {
		return magicNames[m]
	}
	return fmt.Sprintf("magic(%d)", uint8(m))
}

// File is one file-system event with the sampled statistics of the file's
// content (when the file was a regular file that could be read). It is what
// the agent's watcher produces and what the fileactivity feature set consumes.
//
// Content statistics describe at most the sampled bytes (SampleLen): the
// whole file when it is small, otherwise its head and tail (FileFlagHeadTail).
//
// Fixed part of the version 1 record body (little endian):
// 0 TimeNs i64 | 8 Size i64 | 16 Mode u32 | 20 Writes u32 | 24 SampleLen u32 |
// 28 Imports u32 | 32 Flags u16 | 34 Sections u16 | 36 Libraries u16 |
// 38 Op u8 | 39 Magic u8 | 40 ExtMagic u8 | 41 ExecFlags u8 | 42 reserved u16 (0) |
// 44 Entropy f32 | 48 ZeroFrac | 52 PrintableFrac | 56 HighFrac | 60 ChiSquare |
// 64 Base64Frac | 68 MaxSectionEntropy | 72 ExecSectionEntropy; then the
// strings Root, Path, OldPath, each u16 length + bytes (at most MaxPathLen).
type File struct {
	TimeNs int64  // when the (first coalesced) notification arrived, Unix ns
	Size   int64  // size in bytes at sampling time (Lstat), -1 when unknown
	Mode   uint32 // Go fs.FileMode bits
	Writes uint32 // write notifications coalesced into this event (debouncing)
	Op     FileOp
	Flags  uint16

	// Content statistics over the sampled bytes.
	SampleLen     uint32
	Magic         Magic   // type recognised from the first bytes
	ExtMagic      Magic   // type the name's extension promises (MagicUnknown: no opinion)
	Entropy       float32 // Shannon entropy, bits per byte (0..8)
	ZeroFrac      float32 // share of 0x00 bytes
	PrintableFrac float32 // share of printable ASCII plus \t \n \r
	HighFrac      float32 // share of bytes >= 0x80
	ChiSquare     float32 // chi-square statistic of the byte histogram against uniform (255 degrees of freedom)
	Base64Frac    float32 // share of bytes inside runs of >= 64 base64-alphabet characters

	// Executable facts (valid with FileFlagExecParsed).
	ExecFlags          uint8
	Sections           uint16
	Imports            uint32  // imported symbols
	Libraries          uint16  // imported libraries (DT_NEEDED, DLLs)
	MaxSectionEntropy  float32 // highest entropy of a section with content
	ExecSectionEntropy float32 // entropy of the executable sections' bytes together

	Root    string // the configured watch root this path lies under
	Path    string // the path (for a rename: the new name)
	OldPath string // for a rename: the old name, when known
}

// Errors of the File encoding.
var (
	ErrFileBadMagic   = errors.New("event: not a file-event batch")
	ErrFileBadVersion = errors.New("event: unsupported file-event batch version")
	ErrFileBadRecord  = errors.New("event: malformed file-event record")
	ErrFilePathLen    = errors.New("event: path longer than MaxPathLen")
)

// EncodedSize returns the number of bytes f takes in a batch.
func (f *File) EncodedSize() int {
	return 4 + fileFixedSize + 6 + len(f.Root) + len(f.Path) + len(f.OldPath)
}

// AppendRecord appends f as one length-prefixed record to b.
func (f *File) AppendRecord(b []byte) ([]byte, error) {
	if len(f.Root) > MaxPathLen || len(f.Path) > MaxPathLen || len(f.OldPath) > MaxPathLen {
		return b, fmt.Errorf("encode file event %.64q: %w", f.Path, ErrFilePathLen)
	}
	if f.Op == 0 || f.Op >= fileOpEnd {
		return b, fmt.Errorf("encode file event: op %d: %w", f.Op, ErrFileBadRecord)
	}
	body := fileFixedSize + 6 + len(f.Root) + len(f.Path) + len(f.OldPath)
	b = binary.LittleEndian.AppendUint32(b, uint32(body))
	var x [fileFixedSize]byte
	le := binary.LittleEndian
	le.PutUint64(x[0:], uint64(f.TimeNs))
	le.PutUint64(x[8:], uint64(f.Size))
	le.PutUint32(x[16:], f.Mode)
	le.PutUint32(x[20:], f.Writes)
	le.PutUint32(x[24:], f.SampleLen)
	le.PutUint32(x[28:], f.Imports)
	le.PutUint16(x[32:], f.Flags)
	le.PutUint16(x[34:], f.Sections)
	le.PutUint16(x[36:], f.Libraries)
	x[38] = uint8(f.Op)
	x[39] = uint8(f.Magic)
	x[40] = uint8(f.ExtMagic)
	x[41] = f.ExecFlags
	le.PutUint32(x[44:], math.Float32bits(f.Entropy))
	le.PutUint32(x[48:], math.Float32bits(f.ZeroFrac))
	le.PutUint32(x[52:], math.Float32bits(f.PrintableFrac))
	le.PutUint32(x[56:], math.Float32bits(f.HighFrac))
	le.PutUint32(x[60:], math.Float32bits(f.ChiSquare))
	le.PutUint32(x[64:], math.Float32bits(f.Base64Frac))
	le.PutUint32(x[68:], math.Float32bits(f.MaxSectionEntropy))
	le.PutUint32(x[72:], math.Float32bits(f.ExecSectionEntropy))
	b = append(b, x[:]...)
	for _, s := range [3]string{f.Root, f.Path, f.OldPath} {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	return b, nil
}

// UnmarshalRecord reads one length-prefixed record from the start of b and
// returns the number of bytes it took. It never panics on any input.
func (f *File) UnmarshalRecord(b []byte) (int, error) {
	if len(b) < 4 {
		return 0, fmt.Errorf("decode file event: short length prefix: %w", ErrFileBadRecord)
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n < fileFixedSize+6 || n > fileFixedSize+6+3*MaxPathLen || n > len(b)-4 {
		return 0, fmt.Errorf("decode file event: body length %d (have %d): %w", n, len(b)-4, ErrFileBadRecord)
	}
	body := b[4 : 4+n]
	x := body[:fileFixedSize]
	le := binary.LittleEndian
	op := FileOp(x[38])
	if op == 0 || op >= fileOpEnd {
		return 0, fmt.Errorf("decode file event: op %d: %w", op, ErrFileBadRecord)
	}
	*f = File{
		TimeNs:             int64(le.Uint64(x[0:])),
		Size:               int64(le.Uint64(x[8:])),
		Mode:               le.Uint32(x[16:]),
		Writes:             le.Uint32(x[20:]),
		SampleLen:          le.Uint32(x[24:]),
		Imports:            le.Uint32(x[28:]),
		Flags:              le.Uint16(x[32:]),
		Sections:           le.Uint16(x[34:]),
		Libraries:          le.Uint16(x[36:]),
		Op:                 op,
		Magic:              Magic(x[39]),
		ExtMagic:           Magic(x[40]),
		ExecFlags:          x[41],
		Entropy:            math.Float32frombits(le.Uint32(x[44:])),
		ZeroFrac:           math.Float32frombits(le.Uint32(x[48:])),
		PrintableFrac:      math.Float32frombits(le.Uint32(x[52:])),
		HighFrac:           math.Float32frombits(le.Uint32(x[56:])),
		ChiSquare:          math.Float32frombits(le.Uint32(x[60:])),
		Base64Frac:         math.Float32frombits(le.Uint32(x[64:])),
		MaxSectionEntropy:  math.Float32frombits(le.Uint32(x[68:])),
		ExecSectionEntropy: math.Float32frombits(le.Uint32(x[72:])),
	}
	rest := body[fileFixedSize:]
	var strs [3]string
	for i := range strs {
		if len(rest) < 2 {
			return 0, fmt.Errorf("decode file event: short string header: %w", ErrFileBadRecord)
		}
		l := int(le.Uint16(rest))
		rest = rest[2:]
		if l > MaxPathLen {
			return 0, fmt.Errorf("decode file event: %w", ErrFilePathLen)
		}
		if l > len(rest) {
			return 0, fmt.Errorf("decode file event: string of %d bytes, %d left: %w", l, len(rest), ErrFileBadRecord)
		}
		strs[i] = string(rest[:l])
		rest = rest[l:]
	}
	if len(rest) != 0 {
		return 0, fmt.Errorf("decode file event: %d trailing bytes: %w", len(rest), ErrFileBadRecord)
	}
	f.Root, f.Path, f.OldPath = strs[0], strs[1], strs[2]
	return 4 + n, nil
}

// MarshalFiles appends the batch encoding of evs to dst.
func MarshalFiles(dst []byte, evs []File) ([]byte, error) {
	if len(evs) > MaxFileBatch {
		return dst, fmt.Errorf("encode file batch: %d events (max %d): %w", len(evs), MaxFileBatch, ErrFileBadRecord)
	}
	dst = append(dst, 'V', 'G', 'F', FileLayoutVersion)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(evs)))
	var err error
	for i := range evs {
		if dst, err = evs[i].AppendRecord(dst); err != nil {
			return dst, fmt.Errorf("encode file batch record %d: %w", i, err)
		}
	}
	return dst, nil
}

// UnmarshalFiles decodes a batch and appends its events to dst. It checks the
// header, the version and every record, allocates no more than the input can
// hold, and never panics.
func UnmarshalFiles(b []byte, dst []File) ([]File, error) {
	if len(b) < fileBatchHeader || b[0] != 'V' || b[1] != 'G' || b[2] != 'F' {
		return dst, ErrFileBadMagic
	}
	if b[3] != FileLayoutVersion {
		return dst, fmt.Errorf("decode file batch: version %d: %w", b[3], ErrFileBadVersion)
	}
	n := int(binary.LittleEndian.Uint32(b[4:]))
	b = b[fileBatchHeader:]
	if n > MaxFileBatch || n > len(b)/fileMinRecord {
		return dst, fmt.Errorf("decode file batch: %d records in %d bytes: %w", n, len(b), ErrFileBadRecord)
	}
	dst = append(dst, make([]File, n)...)
	out := dst[len(dst)-n:]
	for i := range out {
		k, err := out[i].UnmarshalRecord(b)
		if err != nil {
			return dst[:len(dst)-n], fmt.Errorf("decode file batch record %d: %w", i, err)
		}
		b = b[k:]
	}
	if len(b) != 0 {
		return dst[:len(dst)-n], fmt.Errorf("decode file batch: %d trailing bytes: %w", len(b), ErrFileBadRecord)
	}
	return dst, nil
}

// SafePath makes a file name safe for protobuf strings (which must be valid
// UTF-8) and for one-line logs and tables: invalid UTF-8 bytes, control
// characters and backslashes are written as Go escapes (\xff, \n, \\).
// Ordinary names are returned unchanged. The fileactivity plugin applies it
// to the paths of its anomalies, the agent to what it takes from its own copy
// of an event: both must escape alike.
func SafePath(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c == '\\' || c >= 0x80 {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case r == '\\':
			b.WriteString("\\\\")
		case r < 0x20 || r == 0x7f:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

package contentstats

import (
	"debug/elf"
	"debug/pe"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// errBudget stops a parser that wants more bytes than the budget allows.
var errBudget = errors.New("contentstats: executable read budget exhausted")

// budgetReader is an io.ReaderAt over a file of known size that refuses reads
// past the end and stops once a byte budget is spent.
type budgetReader struct {
	r    io.ReaderAt
	size int64
	left int64
	used int64
}

func (b *budgetReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= b.size {
		return 0, io.EOF
	}
	if rem := b.size - off; int64(len(p)) > rem {
		p = p[:rem]
	}
	if int64(len(p)) > b.left {
		b.left = 0
		return 0, errBudget
	}
	b.left -= int64(len(p))
	b.used += int64(len(p))
	n, err := b.r.ReadAt(p, off)
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

// ExecFacts are the header facts of an ELF or PE file.
type ExecFacts struct {
	Flags              uint8 // event.Exec* bits
	Sections           uint16
	Imports            uint32
	Libraries          uint16
	MaxSectionEntropy  float32
	ExecSectionEntropy float32
}

func (s *Sampler) exec(r io.ReaderAt, size int64, ev *event.File) {
	br := &budgetReader{r: r, size: size, left: int64(s.cfg.ExecBudget)}
	var (
		f   ExecFacts
		err error
	)
	if ev.Magic == event.MagicELF {
		f, err = s.elfFacts(br)
	} else {
		f, err = s.peFacts(br)
	}
	s.c.execBytes.Add(uint64(br.used))
	if errors.Is(err, errBudget) {
		s.c.budget.Add(1)
	}
	var pe *parserPanic
	if errors.As(err, &pe) {
		s.c.panics.Add(1)
	}
	if err != nil && f.Sections == 0 && f.Flags&(event.ExecELF|event.ExecPE) == 0 {
		s.c.execBroken.Add(1)
		ev.Flags |= event.FileFlagExecBroken
		return
	}
	s.c.execParsed.Add(1)
	ev.Flags |= event.FileFlagExecParsed
	ev.ExecFlags, ev.Sections, ev.Imports, ev.Libraries = f.Flags, f.Sections, f.Imports, f.Libraries
	ev.MaxSectionEntropy, ev.ExecSectionEntropy = f.MaxSectionEntropy, f.ExecSectionEntropy
}

type parserPanic struct{ v any }

func (p *parserPanic) Error() string { return fmt.Sprintf("executable parser panicked: %v", p.v) }

// guard runs fn and turns a panic into an error.
func guard(fn func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &parserPanic{v}
		}
	}()
	return fn()
}

// ELFFacts parses an ELF file through r (size bytes) reading at most budget
// bytes. It never panics. A partial result comes with an error when the
// header parsed but later steps (imports, section reads) failed.
func ELFFacts(r io.ReaderAt, size int64, budget int) (ExecFacts, error) {
	s := New(Config{ExecBudget: budget})
	return s.elfFacts(&budgetReader{r: r, size: size, left: int64(budget)})
}

// PEFacts is ELFFacts for PE files.
func PEFacts(r io.ReaderAt, size int64, budget int) (ExecFacts, error) {
	s := New(Config{ExecBudget: budget})
	return s.peFacts(&budgetReader{r: r, size: size, left: int64(budget)})
}

// secHist accumulates section entropy.
type secHist struct {
	exec    [256]uint32
	maxEnt  float32
	partial bool
}

// sample reads up to SectionSample bytes of a section's file content at
// [off, off+n) and folds them into the statistics.
func (s *Sampler) sampleSection(br *budgetReader, off, n int64, isExec bool, h *secHist) error {
	if n <= 0 || off < 0 || off >= br.size {
		return nil
	}
	if n > br.size-off {
		n = br.size - off
	}
	if n > int64(s.cfg.SectionSample) {
		n = int64(s.cfg.SectionSample)
		h.partial = true
	}
	if cap(s.sect) < int(n) {
		s.sect = make([]byte, s.cfg.SectionSample)
	}
	buf := s.sect[:n]
	k, err := br.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	buf = buf[:k]
	hh := Histogram(buf)
	if e := Entropy(&hh); e > h.maxEnt {
		h.maxEnt = e
	}
	if isExec {
		for i, c := range hh {
			h.exec[i] += c
		}
	}
	return nil
}

func (s *Sampler) elfFacts(br *budgetReader) (ExecFacts, error) {
	var f ExecFacts
	var h secHist
	err := guard(func() error {
		ef, err := elf.NewFile(br)
		if err != nil {
			return fmt.Errorf("parse elf: %w", err)
		}
		f.Flags |= event.ExecELF
		f.Sections = uint16(min(len(ef.Sections), 65535))
		inExec := false
		anyExecSect := false
		hasSymtab := false
		for i, sec := range ef.Sections {
			if sec.Type == elf.SHT_SYMTAB {
				hasSymtab = true
			}
			x := sec.Flags&elf.SHF_EXECINSTR != 0
			if x && sec.Flags&elf.SHF_WRITE != 0 {
				f.Flags |= event.ExecWX
			}
			if x {
				anyExecSect = true
				if ef.Entry >= sec.Addr && ef.Entry < sec.Addr+sec.Size {
					inExec = true
				}
			}
			if i < s.cfg.MaxSections && sec.Type != elf.SHT_NOBITS && sec.Type != elf.SHT_NULL {
				if err := s.sampleSection(br, int64(sec.Offset), int64(sec.FileSize), x, &h); err != nil {
					return fmt.Errorf("read elf section %d: %w", i, err)
				}
			}
		}
		for _, p := range ef.Progs {
			if p.Type != elf.PT_LOAD {
				continue
			}
			x := p.Flags&elf.PF_X != 0
			if x && p.Flags&elf.PF_W != 0 {
				f.Flags |= event.ExecWX
			}
			if !anyExecSect && x {
				// No section headers (stripped or packed): judge by the segments.
				if ef.Entry >= p.Vaddr && ef.Entry < p.Vaddr+p.Memsz {
					inExec = true
				}
				if err := s.sampleSection(br, int64(p.Off), int64(p.Filesz), true, &h); err != nil {
					return fmt.Errorf("read elf segment: %w", err)
				}
			}
		}
		if !inExec && ef.Type == elf.ET_EXEC || !inExec && ef.Type == elf.ET_DYN && ef.Entry != 0 {
			f.Flags |= event.ExecEntryOutside
		}
		if !hasSymtab {
			f.Flags |= event.ExecNoSymbols
		}
		if syms, err := ef.ImportedSymbols(); err == nil {
			f.Imports = uint32(len(syms))
		} else if errors.Is(err, errBudget) {
			return err
		}
		if libs, err := ef.ImportedLibraries(); err == nil {
			f.Libraries = uint16(min(len(libs), 65535))
		} else if errors.Is(err, errBudget) {
			return err
		}
		return nil
	})
	f.MaxSectionEntropy = h.maxEnt
	f.ExecSectionEntropy = Entropy(&h.exec)
	if h.partial {
		f.Flags |= event.ExecSampledPartly
	}
	return f, err
}

const (
	peScnCntCode    = 0x00000020
	peScnMemExecute = 0x20000000
	peScnMemWrite   = 0x80000000
)

func (s *Sampler) peFacts(br *budgetReader) (ExecFacts, error) {
	var f ExecFacts
	var h secHist
	err := guard(func() error {
		pf, err := pe.NewFile(br)
		if err != nil {
			return fmt.Errorf("parse pe: %w", err)
		}
		f.Flags |= event.ExecPE
		f.Sections = uint16(min(len(pf.Sections), 65535))
		var entry uint32
		switch oh := pf.OptionalHeader.(type) {
		case *pe.OptionalHeader32:
			entry = oh.AddressOfEntryPoint
		case *pe.OptionalHeader64:
			entry = oh.AddressOfEntryPoint
		}
		inExec := false
		for i, sec := range pf.Sections {
			x := sec.Characteristics&(peScnMemExecute|peScnCntCode) != 0
			if x && sec.Characteristics&peScnMemWrite != 0 {
				f.Flags |= event.ExecWX
			}
			vs := sec.VirtualSize
			if vs == 0 {
				vs = sec.Size
			}
			if x && entry >= sec.VirtualAddress && entry-sec.VirtualAddress < vs {
				inExec = true
			}
			if i < s.cfg.MaxSections {
				if err := s.sampleSection(br, int64(sec.Offset), int64(sec.Size), x, &h); err != nil {
					return fmt.Errorf("read pe section %d: %w", i, err)
				}
			}
		}
		if !inExec && entry != 0 {
			f.Flags |= event.ExecEntryOutside
		}
		if pf.NumberOfSymbols == 0 {
			f.Flags |= event.ExecNoSymbols
		}
		syms, err := pf.ImportedSymbols()
		if err != nil {
			if errors.Is(err, errBudget) {
				return err
			}
			return nil
		}
		f.Imports = uint32(len(syms))
		libs := map[string]struct{}{}
		for _, sym := range syms {
			if i := strings.LastIndexByte(sym, ':'); i >= 0 && len(libs) < 65535 {
				libs[strings.ToLower(sym[i+1:])] = struct{}{}
			}
		}
		f.Libraries = uint16(len(libs))
		return nil
	})
	f.MaxSectionEntropy = h.maxEnt
	f.ExecSectionEntropy = Entropy(&h.exec)
	if h.partial {
		f.Flags |= event.ExecSampledPartly
	}
	return f, err
}

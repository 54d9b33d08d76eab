#!/usr/bin/env python3
"""Turns the device code of core/cuda/flash_attention.cu into host C++ for the emulator:
everything from the namespace down to the host-side section, with the PTX wrappers
replaced by ptx_emu.inc and shared-memory declarations pointed at the emulated block.
Usage: extract.py <flash_attention.cu> <out.inc>"""
import os, re, sys

src_path, out_path = sys.argv[1], sys.argv[2]
here = os.path.dirname(os.path.abspath(__file__))
src = open(src_path).read()
start = src.index('namespace llm::ops::cuda {')
end = src.index('// Host side: operand checks and dispatch.')
body = src[start:end]
p0 = body.index('// PTX wrappers (sm_80+).')
p1 = body.index('// A-operand fragment')
body = body[:p0] + open(os.path.join(here, 'ptx_emu.inc')).read() + '\n// ' + body[p1:]
body = body.replace('extern __shared__ __align__(16) unsigned char smem_raw[];',
                    'unsigned char* smem_raw = emu::cur->dyn();')
body = re.sub(r'__shared__ float (\w+)((?:\[\w+\])+);',
              r'auto& \1 = *reinterpret_cast<float(*)\2>(emu::cur->st());', body)
if '__shared__' in body or re.search(r'\basm\b', body):
    sys.exit('extract.py: shared-memory declaration or inline asm left over; update the patterns')
body += '\n}  // namespace\n}  // namespace llm::ops::cuda\n'
open(out_path, 'w').write(body)

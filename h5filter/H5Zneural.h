/*
 * H5Zneural.h -- the neuralfilter HDF5 filter: ID and cd_values layout.
 *
 * The plugin (libh5neuralfilter.so) is thin: it validates the dataset in can_apply, records
 * the chunk in set_local and forwards every chunk to embedded Python
 * (pyneuralfilter.filter.encode_chunk / decode_chunk), where all policy lives.
 * It links no libhdf5 and no libpython; both are resolved at run time.
 *
 * cd_values layout, version 1 (each element an unsigned 32-bit word; HDF5 stores and
 * byte-swaps every word on its own, so 64-bit quantities are split with a fixed word order):
 *
 *   word  name                 meaning
 *   ----  -------------------  -----------------------------------------------------------
 *   0     NF_CD_VERSION        layout version, 1
 *   1     NF_CD_MODE           error-bound mode: 1 = absolute, 2 = relative to the chunk's
 *                              value range (max - min); 0 = "use the defaults" (rel 1e-3),
 *                              replaced by set_local with mode 2 and bound 1e-3
 *   2     NF_CD_BOUND_LO       error bound, IEEE-754 binary64: bits 0..31 (LOW word first)
 *   3     NF_CD_BOUND_HI       error bound, IEEE-754 binary64: bits 32..63
 *   4     NF_CD_MODEL_HI       model content hash, hex digits 1..8 read as one
 *                              big-endian hex number (e.g. hash "1a2b3c4d..." -> 0x1a2b3c4d)
 *   5     NF_CD_MODEL_LO       model content hash, hex digits 9..16
 *                              words 4 and 5 both 0: the default model of the writing version
 *   ----  appended by set_local (anything the user passed beyond word 5 is replaced) ----
 *   6     NF_CD_ITEMSIZE       bytes per value: 4 (float32) or 8 (float64), little-endian
 *   7     NF_CD_RANK           chunk rank r, 1..4
 *   8..   NF_CD_DIMS           the r chunk dimensions, slowest varying first (C order)
 *
 * A user gives 0 words (defaults) or exactly NF_CD_NUSER = 6 words, e.g. with h5repack:
 *   h5repack -f UD=50125,0,6,1,1,<lo>,<hi>,0,0 in.h5 out.h5     (absolute bound)
 * where <lo>,<hi> are the two words of the double (pyneuralfilter.filter.pack_cd_values
 * prints them).
 */
#ifndef H5ZNEURAL_H
#define H5ZNEURAL_H

/* Private range (>= 32768, untracked) until The HDF Group assigns an ID: docs/filter.md. */
#define H5Z_FILTER_NEURAL 50125

#define NF_CD_LAYOUT_VERSION 1u

#define NF_CD_VERSION 0
#define NF_CD_MODE 1
#define NF_CD_BOUND_LO 2
#define NF_CD_BOUND_HI 3
#define NF_CD_MODEL_HI 4
#define NF_CD_MODEL_LO 5
#define NF_CD_NUSER 6
#define NF_CD_ITEMSIZE 6
#define NF_CD_RANK 7
#define NF_CD_DIMS 8
#define NF_MAX_RANK 4
#define NF_CD_NMAX (NF_CD_DIMS + NF_MAX_RANK)

#define NF_MODE_DEFAULT 0u
#define NF_MODE_ABS 1u
#define NF_MODE_REL 2u
#define NF_DEFAULT_REL 1e-3

/* Exported besides H5PLget_plugin_type / H5PLget_plugin_info (for pyneuralfilter.filter). */
#ifdef __cplusplus
extern "C" {
#endif
/* Bind a second filter class to the HDF5 library that the shared object `h5py_module`
 * (e.g. h5py.h5z.__file__, already loaded) depends on; returns the H5Z_class2_t address to
 * pass to h5py.h5z.register_filter, or NULL (see neuralfilter_last_error). */
const void *neuralfilter_h5py_class(const char *h5py_module);
const char *neuralfilter_last_error(void);
#ifdef __cplusplus
}
#endif

#endif

/* c_host.c -- a pure-C HDF5 program that writes and reads through neuralfilter.
 *
 * Build against any HDF5 (no neuralfilter header or library needed):
 *   gcc c_host.c -o c_host $(pkg-config --cflags --libs hdf5)        # or h5cc c_host.c
 * Run with the plugin folder on the plugin path:
 *   HDF5_PLUGIN_PATH=$(python -c 'import pyneuralfilter; print(pyneuralfilter.PLUGIN_PATH)') \
 *     ./c_host write out.h5 0.001        # dataset /c: 20x30x40 float32, chunks 10x15x20, abs
 *     ./c_host read file.h5 /dataset out.raw   # all values as raw native floats/doubles
 */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NEURAL_FILTER 50125

static float value(int i, int j, int k) { return (float)(i * 0.1 + 0.5 * j - 0.01 * k * k + (i * j % 7) * 0.03); }

static int do_write(const char *path, double abs_bound)
{
    hsize_t dims[3] = {20, 30, 40}, chunks[3] = {10, 15, 20};
    float *buf = malloc(sizeof(float) * 20 * 30 * 40);
    for (int i = 0; i < 20; i++)
        for (int j = 0; j < 30; j++)
            for (int k = 0; k < 40; k++) buf[(i * 30 + j) * 40 + k] = value(i, j, k);
    /* cd_values: version 1, mode 1 (abs), bound as two words (low word first), default model */
    unsigned long long bits;
    memcpy(&bits, &abs_bound, 8);
    unsigned cd[6] = {1, 1, (unsigned)(bits & 0xffffffffu), (unsigned)(bits >> 32), 0, 0};
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t s = H5Screate_simple(3, dims, NULL);
    hid_t p = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(p, 3, chunks);
    if (H5Pset_filter(p, NEURAL_FILTER, H5Z_FLAG_MANDATORY, 6, cd) < 0) return 1;
    if (H5Zfilter_avail(NEURAL_FILTER) <= 0) { fprintf(stderr, "neuralfilter not available\n"); return 1; }
    hid_t d = H5Dcreate2(f, "c", H5T_NATIVE_FLOAT, s, H5P_DEFAULT, p, H5P_DEFAULT);
    if (d < 0) return 1;
    if (H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) return 1;
    H5Dclose(d); H5Pclose(p); H5Sclose(s);
    if (H5Fclose(f) < 0) return 1;
    free(buf);
    printf("wrote %s:/c\n", path);
    return 0;
}

static int do_read(const char *path, const char *name, const char *out)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return 1;
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return 1;
    hid_t t = H5Dget_type(d), nt = H5Tget_native_type(t, H5T_DIR_ASCEND);
    hid_t s = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(s);
    size_t sz = H5Tget_size(nt);
    void *buf = malloc((size_t)n * sz);
    if (H5Dread(d, nt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) return 1;
    FILE *fp = fopen(out, "wb");
    fwrite(buf, sz, (size_t)n, fp);
    fclose(fp);
    printf("read %lld values of %zu bytes from %s:%s\n", (long long)n, sz, path, name);
    free(buf);
    H5Sclose(s); H5Tclose(nt); H5Tclose(t); H5Dclose(d);
    return H5Fclose(f) < 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "write")) return do_write(argv[2], atof(argv[3]));
    if (argc == 5 && !strcmp(argv[1], "read")) return do_read(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: %s write FILE ABS | read FILE DATASET OUT.raw\n", argv[0]);
    return 2;
}

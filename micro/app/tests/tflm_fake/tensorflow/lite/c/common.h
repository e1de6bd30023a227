// Host-test fake of the few TFLM types the app's state adapters use (micro/app/tests/test_tflm_state.cc): the
// same member names as TFLM's, so tflm/output_tensor_state.cc and tflm/resource_variable_state.cc compile
// unchanged against it.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
typedef enum { kTfLiteNoType = 0, kTfLiteFloat32 = 1, kTfLiteInt32 = 2, kTfLiteInt64 = 4 } TfLiteType;
typedef struct {
  int size;
  int data[1];
} TfLiteIntArray;
typedef union {
  void* data;
  float* f;
  int32_t* i32;
  int64_t* i64;
  char* raw;
} TfLitePtrUnion;
typedef struct {
  TfLiteType type;
  TfLitePtrUnion data;
  size_t bytes;
} TfLiteTensor;
typedef struct {
  TfLitePtrUnion data;
  TfLiteIntArray* dims;
  TfLiteType type;
} TfLiteEvalTensor;

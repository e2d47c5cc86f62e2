#!/bin/bash
# The test bed's fabric-javaenv build: builds a copy of the package with its own Gradle or Maven
# wrapper, else the image's, and leaves the jars in /chaincode/output; a package with no build
# file brings its jars prebuilt. A single jar is an uber-jar, marked with .uberjar for start.
set -ex
home=/root/chaincode-java
source=/chaincode/input/src
work=$(mktemp -d)
tar -C "$source" -cf - . | tar -C "$work" -xf -
cd "$work"

if [ -f build.gradle ] || [ -f build.gradle.kts ]; then
    if [ -f gradlew ]; then
        chmod +x gradlew
        ./gradlew build shadowJar -x test
    else
        "$home/gradlew" -p "$work" build shadowJar -x test
    fi
    jars=build/libs
elif [ -f pom.xml ]; then
    if [ ! -f mvnw ]; then
        cp -R "$home/.mvn" "$home/mvnw" .
    fi
    chmod +x mvnw
    ./mvnw -B compile package -DskipTests -Dmaven.test.skip=true
    jars=target
else
    jars=.
fi

mapfile -t found < <(find "$jars" -name '*.jar' ! -name 'original-*.jar')
if [ "${#found[@]}" -eq 0 ]; then
    echo "build.sh: no jar was built or packaged in $source" >&2
    exit 1
fi
cp "${found[@]}" /chaincode/output/
if [ "$jars" != . ] && [ "${#found[@]}" -eq 1 ]; then
    touch /chaincode/output/.uberjar
fi
